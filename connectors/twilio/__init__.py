"""Twilio Programmable Voice: the Calls resource as call activities, plus status callbacks."""

from connectors.twilio.connector import TwilioConnector

__all__ = ["TwilioConnector"]
