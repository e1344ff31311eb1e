"""OTLP traces from `errmap serve --otlp-endpoint`, received by a real OTLP/gRPC
receiver: oteltest's GrpcSink (PyPI), built on opentelemetry-proto.

- a hit, a miss and an unknown method arrive as SERVER spans with
  OpenTelemetry's RPC attributes and errmap's reason and domain;
- a caller's W3C `traceparent` is the parent: same trace id, its span id as
  the parent span id;
- with no receiver, every call still succeeds, and every span is counted as
  dropped in /metrics.
"""

import logging
import re
import socket
import threading
import time
import urllib.request

import grpc
from oteltest.sink import GrpcSink
from oteltest.sink.handler import RequestHandler

from test_catalog_life import _wait_until
from test_interop import Server, catalog_pb2

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


class Spans(RequestHandler):
    """Keeps every span exported to it, with its resource's attributes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []

    def handle_logs(self, request, headers):  # noqa: ARG002
        pass

    def handle_metrics(self, request, headers):  # noqa: ARG002
        pass

    def handle_trace(self, request, headers):  # noqa: ARG002
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append((resource, span))

    def named(self, method):
        with self.lock:
            return [(r, s) for r, s in self.spans if attributes(s.attributes).get("rpc.method") == method]


def attributes(kvs):
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hit_a_miss_and_an_unknown_method_arrive_with_their_attributes():
    spans = Spans()
    port = free_port()
    sink = GrpcSink(spans, logging.getLogger("otlp-sink"), port=port)
    sink.start()
    # Gzipped, as a collector across a network would be sent.
    s = Server("--otlp-endpoint", f"http://127.0.0.1:{port}", "--otlp-compression", "gzip")
    try:
        hit = s.stub.GetError(
            catalog_pb2.GetErrorRequest(code=21),
            metadata=(("traceparent", TRACEPARENT),),
            timeout=5,
        )
        assert hit.error.name == "AUTH_REQUIRED"
        try:
            s.stub.GetError(catalog_pb2.GetErrorRequest(code=48), timeout=5)
            raise AssertionError("48 is no code")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND
        nope = s.channel.unary_unary("/errmap.v1.ErrorCatalog/Nope")
        try:
            nope(b"", timeout=5)
            raise AssertionError("no such method")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED

        # Batches leave at most a second after their first span.
        assert _wait_until(
            lambda: len(spans.named("GetError")) == 2 and len(spans.named("Nope")) == 1, 10
        ), spans.spans
        (resource, _), *_ = spans.named("GetError")
        assert resource["service.name"] == "errmap"
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", resource["service.version"])

        by_trace = {s.trace_id.hex(): s for _, s in spans.named("GetError")}
        parented = by_trace.pop(TRACE_ID)
        (other,) = by_trace.values()
        for span, code, name in ((parented, 0, "OK"), (other, 5, "NOT_FOUND")):
            a = attributes(span.attributes)
            assert span.name == "errmap.v1.ErrorCatalog/GetError"
            assert span.kind == SERVER_KIND
            assert a["rpc.system"] == "grpc"
            assert a["rpc.service"] == "errmap.v1.ErrorCatalog"
            assert a["rpc.grpc.status_code"] == code, a
        # The caller's traceparent is the parent.
        assert parented.parent_span_id.hex() == PARENT_ID
        assert "error.type" not in attributes(parented.attributes)
        # A new trace otherwise, with no parent.
        assert other.parent_span_id == b""
        miss = attributes(other.attributes)
        assert miss["error.type"] == "NOT_FOUND"
        assert miss["errmap.error.reason"] == "API_ITEM_NOT_FOUND"
        assert miss["errmap.error.domain"] == "auth.errmap.dev"
        # NOT_FOUND is the caller's error, not the server's.
        assert other.status.code != STATUS_ERROR

        (_, unknown), = spans.named("Nope")
        a = attributes(unknown.attributes)
        assert a["rpc.grpc.status_code"] == 12
        assert a["error.type"] == "UNIMPLEMENTED"
        assert a["errmap.error.reason"] == "API_METHOD_NOT_FOUND"
        assert unknown.status.code == STATUS_ERROR
    finally:
        assert s.terminate() == 0
        sink.stop()


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_with_no_receiver_calls_succeed_and_every_span_is_counted_dropped():
    # Nothing listens at the endpoint; the queue is small.
    s = small_queue_server(free_port())
    calls = 300
    try:
        for _ in range(calls):
            assert s.stub.GetError(catalog_pb2.GetErrorRequest(code=21), timeout=5).error.number == 21
        # Every span is dropped: by the full queue, or with its failed batch.
        assert _wait_until(lambda: metric(scrape(s), "errmap_trace_spans_dropped_total") == calls, 20), scrape(s)
        text = scrape(s)
        assert metric(text, "errmap_trace_spans_exported_total") == 0
        assert metric(text, "errmap_trace_spans_dropped_total", reason="export_failed") > 0
    finally:
        assert s.terminate() == 0


def test_a_receiver_that_never_answers_fills_the_queue_and_calls_do_not_wait():
    # A receiver that takes connections and never answers: an export waits
    # its whole timeout (5 s), and the queue fills behind it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    s = small_queue_server(silent.getsockname()[1])
    calls = 300
    try:
        for _ in range(calls):
            # Each call is answered; none waits for the export.
            assert s.stub.GetError(catalog_pb2.GetErrorRequest(code=21), timeout=2).error.number == 21
        assert _wait_until(
            lambda: metric(scrape(s), "errmap_trace_spans_dropped_total", reason="queue_full") > 0, 10
        ), scrape(s)
        # At most a queue and a batch (16 each) are held; the rest dropped.
        dropped = metric(scrape(s), "errmap_trace_spans_dropped_total")
        assert dropped >= calls - 32, scrape(s)
    finally:
        began = time.monotonic()
        assert s.terminate() == 0
        # The export in flight does not hold the exit up past its bound.
        assert time.monotonic() - began < 15
        silent.close()


def small_queue_server(port):
    """`errmap serve` exporting to 127.0.0.1:`port` through a queue of 16,
    with its metrics."""
    return Server(
        "--otlp-endpoint",
        f"http://127.0.0.1:{port}",
        "--otlp-queue",
        "16",
        "--admin-addr",
        "127.0.0.1:0",
    )


def scrape(server):
    with urllib.request.urlopen(f"http://{server.admin}/metrics", timeout=5) as r:
        return r.read().decode()
