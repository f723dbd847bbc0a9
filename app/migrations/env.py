"""Alembic environment: the platform's, shared by every service (app/platform/migrations.py)."""

from app.platform.migrations import run

run()
