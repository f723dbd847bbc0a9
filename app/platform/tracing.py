"""OpenTelemetry tracing: a TracerProvider per app, Flask and SQLAlchemy instrumentation.

Standard variables read by the SDK and exporter (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT,
OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, OTEL_BSP_*, OTEL_SDK_DISABLED) keep their usual meaning.
Lookout's defaults where they are unset: sampler parentbased_traceidratio at
DEFAULT_SAMPLE_RATIO, export timeout 5 s, OTEL_SEMCONV_STABILITY_OPT_IN=http (the stable HTTP
attribute names). Spans are exported (OTLP HTTP/protobuf) only when an
endpoint is set.

Gunicorn loads the app in each worker after the fork (preload_app is off), so the provider and
its export thread are created per worker, never shared across a fork.
"""

from __future__ import annotations

import os
import threading
import uuid
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import get_tracer
from sqlalchemy.engine import Engine

DEFAULT_SAMPLE_RATIO = 0.1
DEFAULT_EXPORT_TIMEOUT_SECONDS = 5
# Anchored: the instrumentation searches these regexes in the full URL, so an unanchored
# "livez" would also silence "/api/v1/livez-report".
EXCLUDED_URLS = r"^https?://[^/]+/(livez|readyz|metrics)/?(\?.*)?$"


def otlp_endpoint() -> str | None:
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Tracing:
    """The app's TracerProvider and the processor that exports its spans."""

    def __init__(self, app: Flask, provider: TracerProvider | None = None) -> None:
        self.processor: BatchSpanProcessor | None = None
        self.provider = provider or self._build_provider(app)
        # Stable HTTP semantic conventions (http.request.method, url.path, ...) unless the
        # operator chose otherwise: the instrumentation's default is the deprecated names, and
        # collecting those twice per request cost 15-20 µs more here. Read once per process.
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
        # The Flask instrumentation also records OTel metrics; this service exposes its own
        # Prometheus metrics, so those are sent to a no-op provider rather than a proxy.
        # The sqlcommenter context is not used (no SQL comments), so it is switched off.
        FlaskInstrumentor.instrument_app(app, tracer_provider=self.provider, excluded_urls=EXCLUDED_URLS,
                                         enable_commenter=False, meter_provider=NoOpMeterProvider())

    def _build_provider(self, app: Flask) -> TracerProvider:
        resource = Resource.create({
            "service.name": app.config["SERVICE_NAME"],
            "service.version": app.extensions["lookout.version"],
            "service.instance.id": str(uuid.uuid4()),
            "deployment.environment": app.config["LOOKOUT_ENV"],
            "process.pid": os.getpid(),
        })  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, take precedence
        sampler = None  # None: the SDK reads OTEL_TRACES_SAMPLER / _ARG
        if "OTEL_TRACES_SAMPLER" not in os.environ:
            sampler = ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))
        # The process exit hook is ours (shutdown below): the SDK's waits up to 30 s.
        provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        if otlp_endpoint():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            timeout = None
            if not any(v in os.environ for v in ("OTEL_EXPORTER_OTLP_TIMEOUT",
                                                 "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")):
                timeout = DEFAULT_EXPORT_TIMEOUT_SECONDS
            # Bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, default 2048): when the collector is
            # down, spans are dropped instead of requests waiting.
            self.processor = BatchSpanProcessor(OTLPSpanExporter(timeout=timeout))
            provider.add_span_processor(self.processor)
        return provider

    def instrument_engine(self, engine: Engine) -> None:
        """Trace this engine's statements as children of the request span.

        EngineTracer is used directly: SQLAlchemyInstrumentor().instrument() is process-wide
        (it patches create_engine and instruments only the first app's engine).
        """
        tracer = get_tracer("opentelemetry.instrumentation.sqlalchemy", tracer_provider=self.provider)
        usage = NoOpMeterProvider().get_meter("lookout").create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, engine, usage)

    @staticmethod
    def quiet_unless_sampled() -> AbstractContextManager[None] | None:
        """Enter OpenTelemetry's suppress_instrumentation() when the request span is not sampled.

        With parent-based sampling, the database spans of an unsampled request are dropped
        anyway; suppressing lets the SQLAlchemy instrumentation skip building them (about 60 µs
        per statement here). Requests without a span (probes, /metrics) get no orphan DB spans.
        The caller exits the returned context at teardown.
        """
        from opentelemetry import trace
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        if trace.get_current_span().get_span_context().trace_flags.sampled:
            return None
        quiet = suppress_instrumentation()
        quiet.__enter__()
        return quiet

    def shutdown(self, timeout_seconds: float) -> None:
        """Flush what is queued, giving up after ``timeout_seconds``.

        BatchSpanProcessor.shutdown() takes no timeout and may wait 30 s on a dead collector,
        past gunicorn's graceful timeout; its export thread is a daemon, so running the
        shutdown in a daemon thread and waiting a bounded time is safe.
        """
        if self.processor is not None:
            flusher = threading.Thread(target=self.processor.shutdown, name="otel-shutdown", daemon=True)
            flusher.start()
            flusher.join(timeout_seconds)

    def __repr__(self) -> str:
        return f"<Tracing export={'on' if self.processor else 'off'}>"


def current_trace_ids() -> tuple[str, str, bool] | None:
    """Return (trace_id, span_id, sampled) of the active span, or None outside a trace."""
    from opentelemetry import trace

    context: Any = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), context.trace_flags.sampled
