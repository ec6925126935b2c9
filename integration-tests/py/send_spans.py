"""Sends N spans with the OpenTelemetry Python SDK over OTLP and prints what it sent, one JSON
object per span, so a test can compare what arrives at the other end."""
import argparse
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult, BatchSpanProcessor


class Recording(SpanExporter):
    """Wraps the real exporter and records every span it was asked to export."""

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--spans", type=int, default=50)
    ap.add_argument("--service", default="py-sender")
    args = ap.parse_args()

    if args.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        inner = OTLPSpanExporter(endpoint=args.endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        inner = OTLPSpanExporter(endpoint=args.endpoint)

    rec = Recording(inner)
    provider = TracerProvider(resource=Resource.create({"service.name": args.service, "test.run": "it"}))
    provider.add_span_processor(BatchSpanProcessor(rec, max_export_batch_size=64, schedule_delay_millis=50))
    tracer = provider.get_tracer("sonde.it", "1.0")
    for i in range(args.spans):
        with tracer.start_as_current_span(f"op-{i}", kind=trace.SpanKind.SERVER) as parent:
            parent.set_attribute("http.request.method", "GET")
            parent.set_attribute("http.response.status_code", 200 + (i % 3))
            parent.set_attribute("index", i)
            parent.set_attribute("ratio", i / 7.0)
            parent.set_attribute("flag", i % 2 == 0)
            parent.set_attribute("tags", ["a", "b"])
    provider.force_flush()
    provider.shutdown()

    for s in rec.sent:
        ctx = s.get_span_context()
        print(json.dumps({
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
            "name": s.name,
            "start": s.start_time,
            "end": s.end_time,
            "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.attributes.items()},
        }))
    sys.stderr.write(f"sent={len(rec.sent)} failed={rec.failures}\n")
    return 0 if rec.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
