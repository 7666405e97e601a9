"""Alembic migrations (a package so they ship with the wheel; alembic skips ``__init__`` files)."""
