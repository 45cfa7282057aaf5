"""Alembic environment: run on the connection that :class:`consumers.store.db.Database` passes.

Run by ``Database.start()`` (upgrade to head), never through an ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context

from consumers.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
