"""HubSpot CRM v3: contacts, companies, deals, engagements as activities, owners, pipelines; batch writes."""

from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConnector"]
