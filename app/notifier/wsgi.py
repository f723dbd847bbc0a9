"""The notifier's web entry point: ``gunicorn app.notifier.wsgi:app``."""

from . import create_app

app = create_app()
