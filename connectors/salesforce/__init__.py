"""Salesforce REST: Account, Contact, Lead, Opportunity, Task, Event and custom objects (read and upsert)."""

from connectors.salesforce.connector import SalesforceConnector

__all__ = ["SalesforceConnector"]
