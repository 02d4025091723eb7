"""HubSpot CRM v3: contacts, companies and deals (read side)."""

from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConnector"]
