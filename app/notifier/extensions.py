"""The notifier's own database (never the users service's) and its Alembic history."""

from __future__ import annotations

from pathlib import Path

from flask_migrate import Migrate

from ..platform.database import new_database

db = new_database()
migrate = Migrate()
MIGRATIONS = str(Path(__file__).with_name("migrations"))
