"""Alembic revision scripts, applied in order by `storage.db.upgrade`."""
