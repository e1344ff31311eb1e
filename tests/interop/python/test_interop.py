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
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto"
BIN = os.environ.get("ERRMAP_BIN", str(ROOT / "target" / "debug" / "errmap"))
PLUGIN = os.environ.get("PROTOC_GEN_ERRMAP", str(ROOT / "target" / "debug" / "protoc-gen-errmap"))
SHOP_PROTO = ROOT / "examples" / "shop" / "proto"


def _generate_stubs():
    """protoc's messages and stubs, and protoc-gen-errmap's typed helpers
    (``*_errmap.py``), for errmap's protos and the shop's, into one folder."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="errmap-py-"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO)) for p in sorted(PROTO.glob("errmap/v1/*.proto"))]
    files.append("shop/v1/shop.proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"--plugin=protoc-gen-errmap={PLUGIN}",
            f"-I{PROTO}",
            f"-I{SHOP_PROTO}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--errmap_out=lang=python:{out}",
            *files,
        ]
    )
    assert rc == 0, f"protoc failed on {files}"
    sys.path.insert(0, str(out))
    return out


GENERATED = _generate_stubs()
from errmap.v1 import catalog_pb2, catalog_pb2_grpc, error_code_pb2, options_pb2  # noqa: E402
from errmap.v1 import error_code_errmap  # noqa: E402

DOMAIN = error_code_pb2.ErrorCode.DESCRIPTOR.GetOptions().Extensions[options_pb2.domain]
CATALOG = "errmap.v1.ErrorCatalog"


def spec(number):
    """The catalog facts of one code, read from the proto's custom options."""
    value = error_code_pb2.ErrorCode.DESCRIPTOR.values_by_number[number]
    return value.name, value.GetOptions().Extensions[options_pb2.error]


class Server:
    """A running `errmap serve`."""

    def __init__(self, *args, credentials=None):
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
        self.admin = None
        if "--admin-addr" in args:
            self.admin = self.proc.stdout.readline().strip()
        if credentials is None:
            self.channel = grpc.insecure_channel(self.addr)
        else:
            self.channel = grpc.secure_channel(self.addr, credentials)
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


def assert_catalog_error(error, name, locale="en-US"):
    """The call failed with catalog code `name`, as docs/design.md says, its
    LocalizedMessage in `locale` with the text the proto gives for it.

    The error is read with the helpers protoc-gen-errmap generated
    (``error_code_errmap.entry_of`` and the code's ``is_<name>``); what they
    read is compared with the proto's own options, which is the check of
    the helpers themselves. The entry is returned."""
    number = error_code_pb2.ErrorCode.Value(name)
    _, facts = spec(number)
    assert error.code() == getattr(grpc.StatusCode, facts.grpc_code)
    entry = error_code_errmap.entry_of(error)
    assert entry is not None, f"not a catalog error: {error}"
    assert getattr(error_code_errmap, "is_" + name.lower())(error)
    assert entry.reason == entry.name == name
    assert entry.domain == DOMAIN
    assert entry.code == number
    assert entry.grpc_code == getattr(grpc.StatusCode, facts.grpc_code)
    assert entry.http_status == facts.http_status
    assert entry.category == facts.category
    assert entry.locale == locale
    text = facts.message if locale == "en-US" else facts.messages[locale]
    assert entry.localized_message == text
    if facts.HasField("retry_delay"):
        delay = facts.retry_delay
        assert entry.retry_delay == delay.seconds + delay.nanos / 1e9
    else:
        assert entry.retry_delay is None
    # grpcio-status's own reader agrees that code and message match.
    assert rpc_status.from_call(error) is not None
    return entry


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
        # The Russian message is in the proto, for any language to read.
        assert facts.messages["ru-RU"].strip(), name


def test_list_errors_with_and_without_filter(server):
    everything = server.stub.ListErrors(catalog_pb2.ListErrorsRequest(), timeout=10).errors
    assert [d.code for d in everything] == sorted(error_code_pb2.ErrorCode.values())
    oauth = server.stub.ListErrors(catalog_pb2.ListErrorsRequest(category="oauth"), timeout=10)
    assert [d.code for d in oauth.errors] == [60, 61, 62, 63, 64]


def test_unknown_code_is_47_with_the_key_asked_for(server):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetError(catalog_pb2.GetErrorRequest(code=48), timeout=10)
    entry = assert_catalog_error(caught.value, "API_ITEM_NOT_FOUND")
    assert entry.params == {"requestedCode": "48"}


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
    assert_catalog_error(caught.value, "API_INVALID_REQUEST")
    _, found = rich(caught.value)
    assert [v.field for v in found["BadRequest"].field_violations] == [field]


RUSSIAN_BROWSER = [("accept-language", "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7")]


def test_errors_in_russian_pass_the_from_call_check(server):
    # rich() runs rpc_status.from_call, which compares the details' code and
    # message with the status's own: grpc-message stays English, only the
    # LocalizedMessage is Russian, and its text is the one in the proto.
    for metadata in (RUSSIAN_BROWSER, [("accept-language", "fr-CH, ru;q=0.5")]):
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.GetError(catalog_pb2.GetErrorRequest(code=48), metadata=metadata, timeout=10)
        assert_catalog_error(caught.value, "API_ITEM_NOT_FOUND", locale="ru-RU")
        status, _ = rich(caught.value)
        assert caught.value.details() == status.message
        assert status.message.isascii(), status.message
    # A language the catalog lacks falls back to English.
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetError(
            catalog_pb2.GetErrorRequest(), metadata=[("accept-language", "de-DE")], timeout=10
        )
    assert_catalog_error(caught.value, "API_INVALID_REQUEST", locale="en-US")


def test_lookups_in_russian_match_the_proto(server):
    listed = server.stub.ListErrors(
        catalog_pb2.ListErrorsRequest(), metadata=[("accept-language", "ru")], timeout=10
    ).errors
    assert len(listed) == 27
    for d in listed:
        _, facts = spec(d.code)
        assert d.locale == "ru-RU"
        assert d.localized_message == facts.messages["ru-RU"]
        assert d.message == facts.message
    english = server.stub.GetError(catalog_pb2.GetErrorRequest(code=11), timeout=10).error
    assert (english.locale, english.localized_message) == ("en-US", english.message)
    catalogs = server.stub.ListCatalogs(catalog_pb2.ListCatalogsRequest(), timeout=10).catalogs
    assert list(catalogs[0].locales) == ["en-US", "ru-RU"]


def test_unknown_category_is_40(server):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ListErrors(catalog_pb2.ListErrorsRequest(category="nope"), timeout=10)
    assert_catalog_error(caught.value, "API_INVALID_REQUEST")
    _, found = rich(caught.value)
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


def test_reflection_serves_google_rpc_under_its_canonical_file_names(server):
    """A client that already knows google/rpc/*.proto (every gRPC library
    does, through googleapis-common-protos or genproto) can merge the
    reflected files without a symbol conflict."""
    from google.protobuf import descriptor_pb2
    from google.rpc import status_pb2

    database = ProtoReflectionDescriptorDatabase(server.channel)
    for name in ("google/rpc/error_details.proto", "google/rpc/status.proto"):
        assert database.FindFileByName(name).name == name
    assert (
        database.FindFileContainingSymbol("google.rpc.ErrorInfo").name
        == "google/rpc/error_details.proto"
    )

    # A pool that holds the stock files, as a client process does.
    pool = descriptor_pool.DescriptorPool()
    stock = {}
    for module in (error_details_pb2, status_pb2):
        for dep in [*module.DESCRIPTOR.dependencies, module.DESCRIPTOR]:
            proto = descriptor_pb2.FileDescriptorProto()
            dep.CopyToProto(proto)
            stock[proto.name] = proto
    for name in ("google/protobuf/any.proto", "google/protobuf/duration.proto"):
        pool.Add(stock.pop(name))
    for proto in stock.values():
        pool.Add(proto)
    # Merging the reflected errmap files: what the pool has by name is kept,
    # the rest is added. A file of google.rpc under another name would
    # define its symbols twice and fail here.
    added = set()

    def add(name):
        if name in added:
            return
        try:
            pool.FindFileByName(name)
            added.add(name)
            return
        except KeyError:
            pass
        proto = database.FindFileByName(name)
        for dep in proto.dependency:
            add(dep)
        pool.Add(proto)
        added.add(name)

    add("errmap/v1/catalog.proto")
    for symbol in ("google.rpc.ErrorInfo", "google.rpc.Status"):
        assert pool.FindMessageTypeByName(symbol).file.name.startswith("google/rpc/")
    assert pool.FindServiceByName(CATALOG).methods_by_name["GetError"]


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
    s = Server("--auth-jwt-secret-file", f.name, "--auth-audience", "errmap")
    try:
        request = catalog_pb2.GetErrorRequest(code=21)
        now = int(time.time())
        cases = [
            ([], "AUTH_REQUIRED"),
            ([("authorization", "Bearer not-a-jwt")], "AUTH_INVALID_TOKEN"),
            (
                [("authorization", "Bearer " + _jwt(b"wrong secret", {"exp": now + 60, "aud": "errmap"}))],
                "AUTH_INVALID_TOKEN",
            ),
            (
                [("authorization", "Bearer " + _jwt(secret, {"exp": now - 120, "aud": "errmap"}))],
                "AUTH_EXPIRED_TOKEN",
            ),
            (
                [("authorization", "Bearer " + _jwt(secret, {"exp": now + 60, "aud": "another-service"}))],
                "AUTH_INVALID_TOKEN",
            ),
            (
                [("authorization", "Bearer " + _jwt(secret, {"exp": now + 60, "aud": "errmap", "iat": now + 3600}))],
                "AUTH_INVALID_TOKEN",
            ),
        ]
        for metadata, name in cases:
            with pytest.raises(grpc.RpcError) as caught:
                s.stub.GetError(request, metadata=metadata, timeout=10)
            assert_catalog_error(caught.value, name)
        # The interceptor answers in the caller's language too.
        with pytest.raises(grpc.RpcError) as caught:
            s.stub.GetError(request, metadata=RUSSIAN_BROWSER, timeout=10)
        assert_catalog_error(caught.value, "AUTH_REQUIRED", locale="ru-RU")
        good = _jwt(secret, {"sub": "py", "exp": now + 60, "aud": "errmap", "iat": now})
        reply = s.stub.GetError(request, metadata=[("token", good)], timeout=10)
        assert reply.error.name == "AUTH_REQUIRED"
        # Health stays open.
        health = health_pb2_grpc.HealthStub(s.channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        assert s.terminate() == 0
        os.unlink(f.name)


class SlowCall:
    """A GetError whose request is held back: the server has accepted the
    call and waits for its request, so the call is in flight (it takes a
    concurrency place only once the request is in) until `release`."""

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


def _watch(channel):
    """A health Watch stream and its first answer."""
    health = health_pb2_grpc.HealthStub(channel)
    stream = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
    first = next(stream)
    return stream, first


def _wait_until(predicate, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_load_shedding_is_44_with_retry_info():
    # Long-lived streams have places of their own: with one, a second
    # Watch is shed at once with 44 and its RetryInfo.
    s = Server("--stream-limit", "1")
    try:
        held, first = _watch(s.channel)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _watch(s.channel)
        entry = assert_catalog_error(caught.value, "API_TOO_MANY_REQUESTS")
        assert entry.retry_delay == 1
        # Unary calls have their own places and are not shed.
        s.stub.GetError(catalog_pb2.GetErrorRequest(code=1), timeout=10)
        held.cancel()
        # The place comes back once the stream ends.
        _wait_until(lambda: _try_watch(s.channel))
    finally:
        assert s.terminate() == 0


def _try_watch(channel):
    try:
        stream, _ = _watch(channel)
        stream.cancel()
        return True
    except grpc.RpcError:
        return False


def test_shutdown_answers_49_with_retry_info_and_finishes_in_flight_calls():
    s = Server("--grace-period", "10s")
    slow = SlowCall(s.channel)
    # A Watch in flight too: its first answer proves the server has taken
    # the calls sent before it on this channel.
    watch, first = _watch(s.channel)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    s.proc.send_signal(signal.SIGTERM)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as caught:
        s.stub.GetError(catalog_pb2.GetErrorRequest(code=1), timeout=10)
    entry = assert_catalog_error(caught.value, "API_TRY_AGAIN_LATER")
    assert entry.retry_delay == 5
    assert slow.release().error.name == "AUTH_EXPIRED_TOKEN"
    watch.cancel()
    assert s.terminate() == 0


def test_a_deadline_shorter_than_the_call_is_deadline_exceeded(server):
    slow = SlowCall(server.channel, timeout=0.2)
    error = slow.future.exception(timeout=30)
    slow.gate.set()
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server is fine afterwards.
    server.stub.GetError(catalog_pb2.GetErrorRequest(code=11), timeout=10)


def test_a_second_teams_catalog_from_a_grpcio_tools_descriptor_set():
    """The shop team's catalog, compiled by grpcio-tools into a descriptor
    set, served with `errmap serve --catalog`, looked up by domain and
    checked against the options Python reads from the same proto."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="errmap-shop-"))
    shop_root = ROOT / "examples" / "shop" / "proto"
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    descriptor_set = out / "shop.binpb"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{shop_root}",
            f"-I{PROTO}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={descriptor_set}",
            f"--python_out={out}",
            "shop/v1/shop.proto",
        ]
    )
    assert rc == 0, "grpcio-tools compiles the shop proto"
    sys.path.insert(0, str(out))
    from shop.v1 import shop_pb2  # noqa: E402

    enum = shop_pb2.ShopError.DESCRIPTOR
    domain = enum.GetOptions().Extensions[options_pb2.domain]
    assert domain == "shop.example.com"
    s = Server("--catalog", str(descriptor_set))
    try:
        listed = s.stub.ListCatalogs(catalog_pb2.ListCatalogsRequest(), timeout=10).catalogs
        catalogs = {c.domain: c for c in listed}
        assert catalogs[DOMAIN].is_default
        shop = catalogs[domain]
        assert shop.enum_name == "shop.v1.ShopError"
        codes = [v for v in enum.values if v.GetOptions().HasExtension(options_pb2.error)]
        assert shop.code_count == len(codes) == len(enum.values) - 1
        for value in codes:
            facts = value.GetOptions().Extensions[options_pb2.error]
            d = s.stub.GetError(
                catalog_pb2.GetErrorRequest(code=value.number, domain=domain), timeout=10
            ).error
            assert (d.name, d.domain) == (value.name, domain)
            assert d.message == facts.message
            assert d.category == facts.category
            assert d.http_status == facts.http_status
            assert d.grpc_code_name == facts.grpc_code
            assert d.HasField("retry_delay") == facts.HasField("retry_delay")
            by_name = s.stub.GetError(
                catalog_pb2.GetErrorRequest(name=value.name, domain=domain), timeout=10
            ).error
            assert by_name.code == value.number
        # A miss in the shop's domain is errmap's 47, read with stock tools.
        with pytest.raises(grpc.RpcError) as caught:
            s.stub.GetError(catalog_pb2.GetErrorRequest(code=99, domain=domain), timeout=10)
        assert_catalog_error(caught.value, "API_ITEM_NOT_FOUND")
    finally:
        assert s.terminate() == 0


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _test_pki():
    """A CA and a server certificate for 127.0.0.1, made now with the
    openssl command (valid one day: nothing is checked in)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="errmap-pki-"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=errmap test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=errmap test server", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "1",
             "-extfile", "ext.cnf", cwd=d)
    return d


def test_over_tls_with_the_test_ca_the_details_are_the_same():
    pki = _test_pki()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes()
    )
    s = Server(
        "--tls-cert", str(pki / "server.pem"),
        "--tls-key", str(pki / "server.key"),
        credentials=credentials,
    )
    try:
        reply = s.stub.GetError(catalog_pb2.GetErrorRequest(code=11), timeout=10)
        assert reply.error.name == "AUTH_EXPIRED_TOKEN"
        with pytest.raises(grpc.RpcError) as caught:
            s.stub.GetError(catalog_pb2.GetErrorRequest(code=48), timeout=10)
        entry = assert_catalog_error(caught.value, "API_ITEM_NOT_FOUND")
        assert entry.params == {"requestedCode": "48"}
        # The same port refuses a plaintext client.
        plain = grpc.insecure_channel(s.addr)
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(plain).result(timeout=2)
        plain.close()
    finally:
        assert s.terminate() == 0


def test_metrics_scraped_and_parsed_with_the_prometheus_client_parser():
    """A known mix against `errmap serve --admin-addr`, then /metrics read
    with the official Python client's parser."""
    secret = b"python metrics secret, long enough!"
    with tempfile.NamedTemporaryFile("wb", suffix=".key", delete=False) as f:
        f.write(secret)
    proc = subprocess.Popen(
        [BIN, "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
         "--auth-jwt-secret-file", f.name, "--auth-audience", "errmap",
         "--stream-limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        addr = proc.stdout.readline().strip()
        admin = proc.stdout.readline().strip()
        assert addr and admin, "two addresses on stdout"
        channel = grpc.insecure_channel(addr)
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = catalog_pb2_grpc.ErrorCatalogStub(channel)
        now = int(time.time())
        good = [("authorization", "Bearer " + _jwt(secret, {"exp": now + 60, "aud": "errmap"}))]
        hits, misses, bad, unknown = 4, 3, 2, 1000
        for _ in range(hits):
            stub.GetError(catalog_pb2.GetErrorRequest(code=11), metadata=good, timeout=10)
        for _ in range(misses):
            with pytest.raises(grpc.RpcError):
                stub.GetError(catalog_pb2.GetErrorRequest(code=48), metadata=good, timeout=10)
        for _ in range(bad):
            with pytest.raises(grpc.RpcError):
                stub.GetError(catalog_pb2.GetErrorRequest(code=11),
                              metadata=[("authorization", "Bearer nope")], timeout=10)
        for i in range(unknown):
            call = channel.unary_unary(f"/no.such.v1.Service/M{i}x{os.urandom(4).hex()}")
            with pytest.raises(grpc.RpcError):
                call(b"", timeout=10)
        # Sheds: the one stream place is held by a Watch.
        held, _ = _watch(channel)
        shed = 2
        for _ in range(shed):
            with pytest.raises(grpc.RpcError) as caught:
                _watch(channel)
            assert_catalog_error(caught.value, "API_TOO_MANY_REQUESTS")
        held.cancel()
        channel.close()

        import urllib.request

        def scrape():
            with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                text = response.read().decode()
            counts = {}
            families = list(text_string_to_metric_families(text))
            # 0.0.4: every family typed as it is declared (a TYPE line
            # naming `x` above samples named `x_total` makes the parser
            # read them as one untyped family per sample), and each
            # family's samples all under it.
            types = {family.name: family.type for family in families}
            assert "unknown" not in types.values(), types
            assert len(types) == len(families), "a family split in two"
            for name in ("errmap_admission_shed", "errmap_retried_calls",
                         "errmap_auth_refusals", "errmap_intake_refused",
                         "process_cpu_seconds"):
                assert types.get(name) == "counter", (name, types)
            assert types["rpc_server_call_duration_seconds"] == "histogram", types
            assert types["errmap_calls_in_flight"] == "gauge", types
            for family in families:
                for sample in family.samples:
                    if sample.name == "rpc_server_call_duration_seconds_count":
                        key = (sample.labels["rpc_method"], sample.labels["rpc_status_code"],
                               sample.labels["error_reason"])
                        counts[key] = counts.get(key, 0) + sample.value
                    if sample.name == "errmap_auth_refusals_total":
                        counts[("refused", sample.labels["reason"])] = sample.value
                    if sample.name == "errmap_admission_shed_total":
                        counts["shed"] = sample.value
            return counts

        expected_calls = hits + misses + bad + unknown + shed + 1
        deadline = time.monotonic() + 10
        while True:
            counts = scrape()
            calls = {k: v for k, v in counts.items() if isinstance(k, tuple) and len(k) == 3}
            # The held Watch is counted once the server sees it cancelled.
            if sum(calls.values()) == expected_calls or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        get = "/errmap.v1.ErrorCatalog/GetError"
        assert counts[(get, "OK", "")] == hits
        assert counts[(get, "NOT_FOUND", "API_ITEM_NOT_FOUND")] == misses
        assert counts[(get, "UNAUTHENTICATED", "AUTH_INVALID_TOKEN")] == bad
        assert counts[("other", "UNIMPLEMENTED", "API_METHOD_NOT_FOUND")] == unknown
        assert counts[("refused", "AUTH_INVALID_TOKEN")] == bad
        watch = "/grpc.health.v1.Health/Watch"
        assert counts[(watch, "RESOURCE_EXHAUSTED", "API_TOO_MANY_REQUESTS")] == shed
        assert counts["shed"] == shed
        # A thousand random paths are one label value, and the histogram
        # counts every call (the held Watch ended CANCELLED).
        assert len({k[0] for k in calls}) <= 3, calls
        assert sum(calls.values()) == expected_calls, calls
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        os.unlink(f.name)


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_debian_prometheus_scrapes_the_admin_listener():
    """Debian's prometheus (PROMETHEUS, default /usr/bin/prometheus; the
    test command installs it) scrapes `errmap serve --admin-addr` every
    second; its query API then counts the calls by reason."""
    import urllib.parse
    import urllib.request

    binary = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
    assert os.path.exists(binary), f"{binary} is missing: scripts/test.sh installs it"
    proc = subprocess.Popen(
        [BIN, "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-prometheus-"))
    prom = None
    try:
        addr = proc.stdout.readline().strip()
        admin = proc.stdout.readline().strip()
        channel = grpc.insecure_channel(addr)
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = catalog_pb2_grpc.ErrorCatalogStub(channel)
        hits, misses, invalid = 6, 4, 3
        for _ in range(hits):
            stub.GetError(catalog_pb2.GetErrorRequest(code=11), timeout=10)
        for _ in range(misses):
            with pytest.raises(grpc.RpcError):
                stub.GetError(catalog_pb2.GetErrorRequest(code=48), timeout=10)
        for _ in range(invalid):
            with pytest.raises(grpc.RpcError):
                stub.GetError(catalog_pb2.GetErrorRequest(), timeout=10)
        channel.close()

        (work / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: errmap\n    static_configs:\n"
            f"      - targets: ['{admin}']\n"
        )
        port = _free_port()
        prom = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        query = urllib.parse.urlencode(
            {"query": "sum by (error_reason) (rpc_server_call_duration_seconds_count)"}
        )
        url = f"http://127.0.0.1:{port}/api/v1/query?{query}"
        want = {"": float(hits), "API_ITEM_NOT_FOUND": float(misses),
                "API_INVALID_REQUEST": float(invalid)}
        got = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.load(response)
                got = {r["metric"].get("error_reason", ""): float(r["value"][1])
                       for r in body["data"]["result"]}
                if got == want:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        assert got == want, f"prometheus saw {got}"
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_a6_retry_policy_honours_the_pushback():
    """A grpcio channel with a gRFC A6 retryPolicy (RESOURCE_EXHAUSTED
    retryable, a 10 ms backoff) calls Watch on a server whose one stream
    place is held for 300 ms: the 44 carries grpc-retry-pushback-ms 1000, so
    the client waits a second, not 10 ms, and its retry succeeds."""
    s = Server("--stream-limit", "1", "--admin-addr", "127.0.0.1:0")
    try:
        held, _ = _watch(s.channel)
        config = json.dumps({
            "methodConfig": [{
                "name": [{"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.01s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }]
        })
        retrying = grpc.insecure_channel(
            s.addr, options=[("grpc.enable_retries", 1), ("grpc.service_config", config)]
        )
        grpc.channel_ready_future(retrying).result(timeout=30)
        threading.Timer(0.3, held.cancel).start()
        started = time.monotonic()
        stream, first = _watch(retrying)
        elapsed = time.monotonic() - started
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert elapsed >= 1.0, f"retried after {elapsed:.3f} s, before the 1 s pushback"
        stream.cancel()
        retrying.close()
        # The retry told the server it was one: grpc-previous-rpc-attempts,
        # counted in errmap_retried_calls_total.
        import urllib.request
        with urllib.request.urlopen(f"http://{s.admin}/metrics", timeout=10) as response:
            samples = {
                sample.name: sample.value
                for family in text_string_to_metric_families(response.read().decode())
                for sample in family.samples
            }
        assert samples["errmap_retried_calls_total"] == 1

        # The trailer itself, as a client without a retry policy sees it.
        held, _ = _watch(s.channel)
        with pytest.raises(grpc.RpcError) as caught:
            _watch(s.channel)
        md = dict(caught.value.trailing_metadata() or ())
        assert md.get("grpc-retry-pushback-ms") == "1000"
        held.cancel()
    finally:
        assert s.terminate() == 0


def readme_snippet(name):
    """The fenced block of README.md that follows its
    `<!-- readme-snippet: NAME ... -->` marker, as written."""
    text = (ROOT / "README.md").read_text()
    marker = f"<!-- readme-snippet: {name} "
    assert marker in text, f"README.md has no snippet {name}"
    lines = text[text.index(marker):].splitlines()[1:]
    assert lines[0].startswith("```"), f"{name}: no fenced block after the marker"
    body = []
    for line in lines[1:]:
        if line.startswith("```"):
            return "\n".join(body) + "\n"
        body.append(line)
    raise AssertionError(f"{name}: the block is not closed")


def test_the_readme_python_snippet_runs_as_written():
    """Issue 22, item 4: the README's protoc line and its snippet, run as
    written in a folder with a copy of proto/ (the pip line is this venv's
    requirements), against the binary."""
    setup = readme_snippet("python-setup").splitlines()
    assert setup[0].startswith("pip install "), setup
    for package in setup[0].split()[2:]:
        assert package in (ROOT / "tests/interop/python/requirements.txt").read_text(), package
    work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-readme-py-"))
    import shutil
    shutil.copytree(PROTO, work / "proto")
    protoc_line = setup[1]
    assert protoc_line.startswith("python -m grpc_tools.protoc "), protoc_line
    # protoc finds protoc-gen-errmap on PATH, where the README puts it.
    path = os.path.dirname(PLUGIN) + os.pathsep + os.environ.get("PATH", "")
    generated = subprocess.run(
        ["bash", "-c", protoc_line.replace("python ", f"{sys.executable} ", 1)],
        cwd=work, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": path},
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr == "", "protoc warned: " + generated.stderr
    assert (work / "errmap" / "v1" / "error_code_errmap.py").is_file()
    (work / "miss.py").write_text(readme_snippet("python-miss"))
    s = Server()
    try:
        ran = subprocess.run(
            [sys.executable, "miss.py"], cwd=work, capture_output=True, text=True,
            timeout=60, env={**os.environ, "ERRMAP_ADDR": s.addr},
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "no such code: 48\n", (ran.stdout, ran.stderr)
    finally:
        assert s.terminate() == 0
