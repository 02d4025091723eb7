"""Microsoft 365 through Microsoft Graph: Outlook mail and calendar as activities (read side)."""

from connectors.microsoft_graph.connector import MicrosoftGraphConnector

__all__ = ["MicrosoftGraphConnector"]
