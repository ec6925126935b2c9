"""Sends spans and/or metrics with the OpenTelemetry Python SDK over OTLP/HTTP (or gRPC) for one
resource (service.name + service.instance.id), then prints one JSON object describing exactly
what the SDK reported as exported, so a test can compare it with what comes out of Sonde.

Metrics (cumulative temporality, the SDK default):
- histogram `http.server.request.duration` (unit `s`) with http.request.method and
  http.response.status_code attributes, explicit bucket boundaries printed in the output;
- monotonic counter `sonde.it.processed` (unit `{item}`);
- up-down counter `sonde.it.active` (unit `{connection}`);
- gauge `sonde.it.memory.usage` (unit `By`).
"""
import argparse
import json
import sys

from opentelemetry.sdk.resources import Resource

BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
METHODS = ["GET", "POST"]
STATUSES = [200, 404]


def span_exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def metric_exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics")


def send_spans(resource, protocol, endpoint, count):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult, BatchSpanProcessor

    class Recording(SpanExporter):
        def __init__(self, inner):
            self.inner = inner
            self.sent = []
            self.failures = 0

        def export(self, spans):
            result = self.inner.export(spans)
            if result == SpanExportResult.SUCCESS:
                self.sent.extend(spans)
            else:
                self.failures += len(spans)
            return result

        def shutdown(self):
            self.inner.shutdown()

        def force_flush(self, timeout_millis=30000):
            return True

    rec = Recording(span_exporter(protocol, endpoint))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(rec, max_export_batch_size=64, schedule_delay_millis=50)
    )
    tracer = provider.get_tracer("sonde.it.signals", "1.0")
    for i in range(count):
        with tracer.start_as_current_span(f"op-{i}", kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", METHODS[i % 2])
            span.set_attribute("index", i)
    provider.force_flush()
    provider.shutdown()
    spans = []
    for s in rec.sent:
        ctx = s.get_span_context()
        spans.append({
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
            "name": s.name,
        })
    return spans, rec.failures


def send_metrics(resource, protocol, endpoint, count):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )

    class Recording(MetricExporter):
        def __init__(self, inner):
            super().__init__(
                preferred_temporality=inner._preferred_temporality,
                preferred_aggregation=inner._preferred_aggregation,
            )
            self.inner = inner
            self.exports = 0
            self.failures = 0

        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            if result == MetricExportResult.SUCCESS:
                self.exports += 1
            else:
                self.failures += 1
            return result

        def force_flush(self, timeout_millis=10_000):
            return True

        def shutdown(self, timeout_millis=30_000, **kwargs):
            self.inner.shutdown()

    rec = Recording(metric_exporter(protocol, endpoint))
    # A long interval: exports happen at force_flush/shutdown only, so the test knows when.
    reader = PeriodicExportingMetricReader(rec, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("sonde.it.signals", "1.0")

    duration = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=BOUNDARIES,
    )
    processed = meter.create_counter("sonde.it.processed", unit="{item}", description="Items.")
    active = meter.create_up_down_counter(
        "sonde.it.active", unit="{connection}", description="Open connections."
    )
    memory = meter.create_gauge("sonde.it.memory.usage", unit="By", description="Memory in use.")

    series = {}
    counter_total = 0
    updown = 0
    for i in range(count):
        method = METHODS[i % 2]
        status = STATUSES[(i // 2) % 2]
        # Deterministic values spread over several buckets.
        value = round(0.003 * (i % 50) + 0.001, 6)
        duration.record(value, {"http.request.method": method, "http.response.status_code": status})
        key = f"{method} {status}"
        series.setdefault(key, {"method": method, "status": status, "values": []})
        series[key]["values"].append(value)
        processed.add(i % 5 + 1)
        counter_total += i % 5 + 1
        delta = 1 if i % 3 else -1
        active.add(delta)
        updown += delta
    memory.set(123456789)

    provider.force_flush()
    provider.shutdown()
    return {
        "boundaries": BOUNDARIES,
        "histogram": list(series.values()),
        "counter_total": counter_total,
        "updown": updown,
        "gauge": 123456789,
        "exports": rec.exports,
    }, rec.failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http"], default="http")
    ap.add_argument("--endpoint", required=True, help="base URL (http) or host:port (grpc)")
    ap.add_argument("--service", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--spans", type=int, default=0)
    ap.add_argument("--metrics", type=int, default=0, help="histogram recordings (0: no metrics)")
    ap.add_argument("--attr", action="append", default=[], help="extra resource attribute k=v")
    args = ap.parse_args()

    attrs = dict(a.split("=", 1) for a in args.attr)
    attrs["service.name"] = args.service
    attrs["service.instance.id"] = args.instance
    resource = Resource.create(attrs)
    out = {"service": args.service, "instance": args.instance, "spans": [], "metrics": None}
    failures = 0
    if args.spans > 0:
        out["spans"], f = send_spans(resource, args.protocol, args.endpoint, args.spans)
        failures += f
    if args.metrics > 0:
        out["metrics"], f = send_metrics(resource, args.protocol, args.endpoint, args.metrics)
        failures += f
    out["failures"] = failures
    print(json.dumps(out))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
