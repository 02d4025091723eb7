"""Aircall: `/v1/calls` as call activities, plus `call.*` webhooks."""

from connectors.aircall.connector import AircallConnector

__all__ = ["AircallConnector"]
