"""Google Calendar: the events of one or more calendars as meeting activities (sync-token incremental)."""

from connectors.google_calendar.connector import GoogleCalendarConnector

__all__ = ["GoogleCalendarConnector"]
