"""Traces in-process: span names, DB children, exclusions, propagation, resource, sampling."""

from __future__ import annotations

import pytest
from conftest import bearer
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from app import create_app
from app.platform.tracing import DEFAULT_SAMPLE_RATIO, EXCLUDED_URLS, Tracing


def spans_by_kind(exporter, kind):
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


def test_server_span_named_by_route_with_database_children(traced_app, span_exporter, make_user):
    user = make_user()
    span_exporter.clear()
    headers = bearer(user)
    span_exporter.clear()
    traced_app.test_client().get(f"/api/v1/users/{user.id}", headers=headers)
    [server] = spans_by_kind(span_exporter, SpanKind.SERVER)
    assert server.name == "GET /api/v1/users/<int:user_id>"
    assert server.attributes["http.route"] == "/api/v1/users/<int:user_id>"
    # The stable HTTP conventions, not the deprecated names (OTEL_SEMCONV_STABILITY_OPT_IN=http).
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["url.path"] == f"/api/v1/users/{user.id}"
    assert server.attributes["http.response.status_code"] == 200
    assert "http.method" not in server.attributes and "http.status_code" not in server.attributes
    db_spans = spans_by_kind(span_exporter, SpanKind.CLIENT)
    assert db_spans and all(s.parent.span_id == server.context.span_id for s in db_spans)
    assert all(s.context.trace_id == server.context.trace_id for s in db_spans)
    assert db_spans[0].name.startswith("SELECT")


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/livez?verbose=1"])
def test_probes_and_metrics_are_not_traced(traced_app, span_exporter, path):
    traced_app.test_client().get(path)
    assert spans_by_kind(span_exporter, SpanKind.SERVER) == []


def test_exclusions_are_anchored(traced_app, span_exporter):
    """An unanchored 'livez' pattern would also drop this route's spans."""
    @traced_app.get("/api/v1/livez-report")
    def report():
        return {}

    traced_app.test_client().get("/api/v1/livez-report")
    assert [s.name for s in spans_by_kind(span_exporter, SpanKind.SERVER)] == ["GET /api/v1/livez-report"]


def test_excluded_pattern_matches_only_whole_paths():
    import re

    pattern = re.compile(EXCLUDED_URLS)
    assert pattern.search("http://pod:8000/livez") and pattern.search("http://pod:8000/metrics?x=1")
    for url in ("http://pod:8000/api/v1/livez-report", "http://pod:8000/housekeeping",
                "http://pod:8000/api/v1/users?next=/livez"):
        assert not pattern.search(url), url


def test_caller_trace_is_continued(traced_app, span_exporter):
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced_app.test_client().get("/api/v1/users", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    [server] = spans_by_kind(span_exporter, SpanKind.SERVER)
    assert format(server.context.trace_id, "032x") == trace_id
    assert format(server.parent.span_id, "016x") == parent_id


def _built_tracing(database_url: str) -> Tracing:
    app = create_app({"DATABASE_URL": database_url})
    return app.extensions["lookout.telemetry"].tracing


def test_resource_describes_the_service(database_url):
    attributes = _built_tracing(database_url).provider.resource.attributes
    assert attributes["service.name"] == "lookout"
    assert attributes["service.version"] and attributes["service.instance.id"]
    assert attributes["deployment.environment"] == "testing"
    assert isinstance(attributes["process.pid"], int)


def test_default_sampler_is_parent_based_ratio(database_url, monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    sampler = _built_tracing(database_url).provider.sampler
    assert f"TraceIdRatioBased{{{DEFAULT_SAMPLE_RATIO}}}" in sampler.get_description()
    assert sampler.get_description().startswith("ParentBased")


def test_sampler_follows_standard_variables(database_url, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    assert "TraceIdRatioBased{0.5}" in _built_tracing(database_url).provider.sampler.get_description()


def test_export_only_when_an_endpoint_is_set(database_url, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert _built_tracing(database_url).processor is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    tracing = _built_tracing(database_url)
    assert isinstance(tracing.processor, BatchSpanProcessor)  # export itself: test_telemetry_gunicorn
    tracing.shutdown(1)


def test_sdk_disabled_turns_tracing_off(database_url, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert _built_tracing(database_url) is None


def _probe_app(database_url, sampler):
    from opentelemetry.sdk.trace import TracerProvider

    app = create_app({"DATABASE_URL": database_url},
                     tracer_provider=TracerProvider(sampler=sampler, shutdown_on_exit=False))

    @app.get("/api/v1/instrumentation")
    def instrumentation():
        from opentelemetry.instrumentation.utils import is_instrumentation_enabled

        return {"enabled": is_instrumentation_enabled()}

    return app


@pytest.mark.parametrize("sampled", [True, False])
def test_unsampled_requests_suppress_child_instrumentation(database_url, sampled):
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    app = _probe_app(database_url, ALWAYS_ON if sampled else ALWAYS_OFF)
    assert app.test_client().get("/api/v1/instrumentation").get_json() == {"enabled": sampled}
    assert is_instrumentation_enabled()  # nothing leaks out of the request


def test_probes_make_no_spans_at_all(traced_app, span_exporter):
    """/readyz queries the database; without suppression that would be an orphan root span."""
    traced_app.test_client().get("/readyz")
    assert span_exporter.get_finished_spans() == ()
