"""Stripe v1: customers, subscriptions, invoices, charges, payment intents, refunds (read, events, webhooks)."""

from connectors.stripe.connector import StripeConnector

__all__ = ["StripeConnector"]
