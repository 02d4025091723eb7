"""A folder of CSV exports (one file per object) as a source, streamed row by row."""

from connectors.legacy_csv.connector import LegacyCsvConnector

__all__ = ["LegacyCsvConnector"]
