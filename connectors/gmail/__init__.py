"""Gmail: the messages of one or more mailboxes as email activities (history-id incremental)."""

from connectors.gmail.connector import GmailConnector

__all__ = ["GmailConnector"]
