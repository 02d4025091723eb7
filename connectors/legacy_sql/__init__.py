"""A legacy CRM's own database as a source: any SQLAlchemy URL (MariaDB/MySQL, PostgreSQL, SQLite)."""

from connectors.legacy_sql.connector import LegacySqlConnector

__all__ = ["LegacySqlConnector"]
