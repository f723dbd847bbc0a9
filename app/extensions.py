"""Extensions created unbound here and attached to each app in ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from flask_migrate import Migrate
from sqlalchemy import TypeDecorator, event
from sqlalchemy.engine import Engine

from .platform.database import new_database

db = new_database()
migrate = Migrate()
MIGRATIONS = str(Path(__file__).with_name("migrations"))  # Alembic's scripts, shipped in the package


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Enforce foreign keys and let readers run beside a writer (WAL) on SQLite."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write a custom column type into migrations as the SQLAlchemy type it stores."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False
