"""Test helpers for connector authors: the conformance kit."""

from hub.testing.conformance import ConnectorConformance, Harness

__all__ = ["ConnectorConformance", "Harness"]
