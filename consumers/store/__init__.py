"""The database layer of the common database and the durable inboxes (SQLite or PostgreSQL)."""

from consumers.store.db import Database, normalize_url, sqlite_url

__all__ = ["Database", "normalize_url", "sqlite_url"]
