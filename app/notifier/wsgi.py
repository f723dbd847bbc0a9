"""The notifier's web entry point: ``gunicorn -c python:app.notifier.gunicorn_conf app.notifier.wsgi:app``."""

from . import create_app

app = create_app()
