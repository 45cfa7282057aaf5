"""Downstream consumers: recipient inboxes (and, later, the common-database projector)."""
