"""The apps Lookout is measured against, serving the same small JSON document as ``GET /``.

    gunicorn ... loadtests.bench.baseline:bare     (a) Flask alone
    gunicorn ... loadtests.bench.baseline:common   (b) the usual setup: prometheus_flask_exporter
                                                   plus FlaskInstrumentor, every request sampled,
                                                   spans exported over OTLP/HTTP like Lookout's
    gunicorn ... loadtests.bench.baseline:lookout_common
                                                   (b') Lookout itself with its telemetry off and
                                                   the usual setup added: the same app code, so
                                                   the two telemetry designs compare directly
"""

from __future__ import annotations

import os

from flask import Flask, jsonify

DOCUMENT = {
    "service": "lookout", "version": "0.1.0", "commit": "unknown", "environment": "production",
    "links": {"docs": "/docs", "openapi": "/openapi.json", "users": "/api/v1/users", "health": "/readyz"},
}


def _flask() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index():  # type: ignore[no-untyped-def]
        return jsonify(DOCUMENT)

    return app


def _common(app: Flask | None = None) -> Flask:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from prometheus_flask_exporter import PrometheusMetrics

    app = app or _flask()
    PrometheusMetrics(app)
    provider = TracerProvider(sampler=ALWAYS_ON)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    FlaskInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def _lookout_common() -> Flask:
    from app import create_app

    os.environ["TELEMETRY_ENABLED"] = "false"
    return _common(create_app())


bare = _flask()
common = _common() if os.environ.get("LOOKOUT_BENCH_APP") == "common" else None
lookout_common = _lookout_common() if os.environ.get("LOOKOUT_BENCH_APP") == "lookout_common" else None
