"""errmap from Python, with nothing but the stock gRPC tooling.

The stubs are generated from ../../../proto with grpcio-tools at import
time; the server is the real `errmap serve` binary (ERRMAP_BIN) on
127.0.0.1:0. Error details are read with grpcio-status's
`rpc_status.from_call`, which itself checks that the code and message inside
grpc-status-details-bin equal the status's own.
"""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto"
BIN = os.environ.get("ERRMAP_BIN", str(ROOT / "target" / "debug" / "errmap"))


def _generate_stubs():
    out = pathlib.Path(tempfile.mkdtemp(prefix="errmap-py-"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO)) for p in sorted(PROTO.glob("errmap/v1/*.proto"))]
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    assert rc == 0, f"protoc failed on {files}"
    sys.path.insert(0, str(out))


_generate_stubs()
from errmap.v1 import catalog_pb2, catalog_pb2_grpc, error_code_pb2, options_pb2  # noqa: E402

DOMAIN = error_code_pb2.ErrorCode.DESCRIPTOR.GetOptions().Extensions[options_pb2.domain]
CATALOG = "errmap.v1.ErrorCatalog"


def spec(number):
    """The catalog facts of one code, read from the proto's custom options."""
    value = error_code_pb2.ErrorCode.DESCRIPTOR.values_by_number[number]
    return value.name, value.GetOptions().Extensions[options_pb2.error]


class Server:
    """A running `errmap serve`."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--addr", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        assert line and line[0].strip(), "errmap serve printed no address"
        self.addr = line[0].strip()
        self.channel = grpc.insecure_channel(self.addr)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = catalog_pb2_grpc.ErrorCatalogStub(self.channel)

    def terminate(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.channel.close()
        return code


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.terminate() == 0


def rich(error):
    """The google.rpc.Status of a failed call, with its details unpacked."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin on {error}"
    found = {}
    for any_ in status.details:
        for kind in ("ErrorInfo", "LocalizedMessage", "RetryInfo", "BadRequest", "Help"):
            message = getattr(error_details_pb2, kind)()
            if any_.Is(message.DESCRIPTOR):
                assert kind not in found, f"two {kind} details"
                any_.Unpack(message)
                found[kind] = message
    return status, found


def assert_catalog_error(error, name):
    """The call failed with catalog code `name`, as DESIGN.md §2 says."""
    _, facts = spec(error_code_pb2.ErrorCode.Value(name))
    assert error.code() == getattr(grpc.StatusCode, facts.grpc_code)
    status, found = rich(error)
    info = found["ErrorInfo"]
    assert info.reason == name
    assert info.domain == DOMAIN
    assert info.metadata["code"] == str(error_code_pb2.ErrorCode.Value(name))
    assert found["LocalizedMessage"].locale == "en-US"
    assert found["LocalizedMessage"].message == facts.message
    if facts.HasField("retry_delay"):
        assert found["RetryInfo"].retry_delay == facts.retry_delay
    else:
        assert "RetryInfo" not in found
    return status, found


def test_every_code_by_number_and_name_matches_the_proto(server):
    numbers = list(error_code_pb2.ErrorCode.values())
    assert len(numbers) == 27
    for number in numbers:
        name, facts = spec(number)
        for request in (
            catalog_pb2.GetErrorRequest(code=number),
            catalog_pb2.GetErrorRequest(name=name),
        ):
            d = server.stub.GetError(request, timeout=10).error
            assert d.HasField("code"), "explicit presence, code 0 included"
            assert d.code == number
            assert d.name == name
            assert d.message == facts.message
            assert d.category == facts.category
            assert d.grpc_code_name == facts.grpc_code
            assert d.grpc_code == getattr(grpc.StatusCode, facts.grpc_code).value[0]
            assert d.http_status == facts.http_status
            assert d.domain == DOMAIN
            assert d.HasField("retry_delay") == facts.HasField("retry_delay")
            if facts.HasField("retry_delay"):
                assert d.retry_delay == facts.retry_delay


def test_list_errors_with_and_without_filter(server):
    everything = server.stub.ListErrors(catalog_pb2.ListErrorsRequest(), timeout=10).errors
    assert [d.code for d in everything] == sorted(error_code_pb2.ErrorCode.values())
    oauth = server.stub.ListErrors(catalog_pb2.ListErrorsRequest(category="oauth"), timeout=10)
    assert [d.code for d in oauth.errors] == [60, 61, 62, 63, 64]


def test_unknown_code_is_47_with_the_key_asked_for(server):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetError(catalog_pb2.GetErrorRequest(code=48), timeout=10)
    _, found = assert_catalog_error(caught.value, "API_ITEM_NOT_FOUND")
    assert found["ErrorInfo"].metadata["requestedCode"] == "48"


@pytest.mark.parametrize(
    "request_, field",
    [
        (catalog_pb2.GetErrorRequest(), "key"),
        (catalog_pb2.GetErrorRequest(name=""), "name"),
    ],
)
def test_missing_key_is_40_with_a_field_violation(server, request_, field):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetError(request_, timeout=10)
    _, found = assert_catalog_error(caught.value, "API_INVALID_REQUEST")
    assert [v.field for v in found["BadRequest"].field_violations] == [field]


def test_unknown_category_is_40(server):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ListErrors(catalog_pb2.ListErrorsRequest(category="nope"), timeout=10)
    _, found = assert_catalog_error(caught.value, "API_INVALID_REQUEST")
    assert found["BadRequest"].field_violations[0].field == "category"


def test_health(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", CATALOG):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services_and_resolves_the_catalog(server):
    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(database.get_services())
    assert {CATALOG, "grpc.health.v1.Health"} <= services, services
    pool = descriptor_pool.DescriptorPool(database)
    enum = pool.FindEnumTypeByName("errmap.v1.ErrorCode")
    assert enum.values_by_name["AUTH_EXPIRED_TOKEN"].number == 11
    info = pool.FindMessageTypeByName("google.rpc.ErrorInfo")
    assert [f.name for f in info.fields] == ["reason", "domain", "metadata"]


def _jwt(secret, claims):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_tokens_on_a_protected_server():
    secret = b"python interop secret, long enough"
    with tempfile.NamedTemporaryFile("wb", suffix=".key", delete=False) as f:
        f.write(secret + b"\n")
    s = Server("--auth-jwt-secret-file", f.name)
    try:
        request = catalog_pb2.GetErrorRequest(code=21)
        cases = [
            ([], "AUTH_REQUIRED"),
            ([("authorization", "Bearer not-a-jwt")], "AUTH_INVALID_TOKEN"),
            (
                [("authorization", "Bearer " + _jwt(b"wrong secret", {"exp": time.time() + 60}))],
                "AUTH_INVALID_TOKEN",
            ),
            (
                [("authorization", "Bearer " + _jwt(secret, {"exp": int(time.time()) - 120}))],
                "AUTH_EXPIRED_TOKEN",
            ),
        ]
        for metadata, name in cases:
            with pytest.raises(grpc.RpcError) as caught:
                s.stub.GetError(request, metadata=metadata, timeout=10)
            assert_catalog_error(caught.value, name)
        good = _jwt(secret, {"sub": "py", "exp": int(time.time()) + 60})
        reply = s.stub.GetError(request, metadata=[("token", good)], timeout=10)
        assert reply.error.name == "AUTH_REQUIRED"
        # Health stays open.
        health = health_pb2_grpc.HealthStub(s.channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        assert s.terminate() == 0
        os.unlink(f.name)


class SlowCall:
    """A GetError whose request is held back: the server has admitted the
    call (headers arrived) and waits for the body, so the call counts as in
    flight until `release`."""

    def __init__(self, channel, timeout=60):
        self.gate = threading.Event()
        call = channel.stream_unary(
            f"/{CATALOG}/GetError",
            request_serializer=catalog_pb2.GetErrorRequest.SerializeToString,
            response_deserializer=catalog_pb2.GetErrorResponse.FromString,
        )

        def requests():
            self.gate.wait(30)
            yield catalog_pb2.GetErrorRequest(code=11)

        self.future = call.future(requests(), timeout=timeout)

    def release(self):
        self.gate.set()
        return self.future.result(timeout=30)


def _wait_until(predicate, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _held(server, slow):
    """Waits until `slow` holds the server's only place: until a probe call
    is shed with 44. If `slow` lost the race for the place, it is redone."""
    deadline = time.time() + 20
    while time.time() < deadline:
        if slow.future.done():
            slow = SlowCall(server.channel)
        try:
            server.stub.GetError(catalog_pb2.GetErrorRequest(code=1), timeout=10)
        except grpc.RpcError as error:
            assert_catalog_error(error, "API_TOO_MANY_REQUESTS")
            return slow
        time.sleep(0.01)
    raise AssertionError("the slow call never held the place")


def test_load_shedding_is_44_with_retry_info():
    s = Server("--concurrency-limit", "1")
    try:
        slow = _held(s, SlowCall(s.channel))
        assert slow.release().error.name == "AUTH_EXPIRED_TOKEN"
        s.stub.GetError(catalog_pb2.GetErrorRequest(code=1), timeout=10)
    finally:
        assert s.terminate() == 0


def test_shutdown_answers_49_with_retry_info_and_finishes_in_flight_calls():
    s = Server("--grace-period", "10s", "--concurrency-limit", "1")
    slow = _held(s, SlowCall(s.channel))
    s.proc.send_signal(signal.SIGTERM)
    health = health_pb2_grpc.HealthStub(s.channel)
    _wait_until(
        lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    with pytest.raises(grpc.RpcError) as caught:
        s.stub.GetError(catalog_pb2.GetErrorRequest(code=1), timeout=10)
    assert_catalog_error(caught.value, "API_TRY_AGAIN_LATER")
    assert slow.release().error.name == "AUTH_EXPIRED_TOKEN"
    assert s.terminate() == 0


def test_a_deadline_shorter_than_the_call_is_deadline_exceeded(server):
    slow = SlowCall(server.channel, timeout=0.2)
    error = slow.future.exception(timeout=30)
    slow.gate.set()
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server is fine afterwards.
    server.stub.GetError(catalog_pb2.GetErrorRequest(code=11), timeout=10)
