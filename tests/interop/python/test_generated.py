"""The Python helpers protoc-gen-errmap generates (``*_errmap.py``), against
real peers.

- A grpcio server aborts with the generated builders; grpcio clients, sync
  and ``grpc.aio``, read the errors with ``is_*`` and ``entry_of``.
- The shop's Rust server's errors (SHOP_BIN) are read by the same helpers.
- The Rust reader reads the Python server's errors: the shop's relay
  (RELAY_BIN), a real errmap server with the response layer, forwards them;
  it prints what ``ErrorStatusExt`` reads, and its layer lets them pass
  byte for byte.
- The helpers pass ``mypy --strict``.
- protoc reports a bad catalog, an unknown ``lang`` and no ``lang`` in one
  line each.

errmap serve's own errors (a GetError miss, 21 without a token, 44 with its
delay) are read with these helpers in test_interop.py.
"""

import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
import pytest
from grpc_status import rpc_status
from grpc_tools import protoc

from test_interop import GENERATED, PLUGIN, PROTO, ROOT, error_code_errmap

from shop.v1 import shop_errmap, shop_pb2, shop_pb2_grpc  # noqa: E402

SHOP_BIN = os.environ.get("SHOP_BIN", str(ROOT / "target" / "debug" / "examples" / "shop-server"))
RELAY_BIN = os.environ.get("RELAY_BIN", str(ROOT / "target" / "debug" / "examples" / "shop-relay"))
WELL_KNOWN = pathlib.Path(protoc.__file__).parent / "_proto"
DETAILS = "grpc-status-details-bin"


class Checkout(shop_pb2_grpc.CheckoutServicer):
    """The shop's checkout in grpcio, failing with the generated builders."""

    def PlaceOrder(self, request, context):
        locale = dict(context.invocation_metadata()).get("accept-language", "en-US")
        if request.cart_id == "missing":
            context.abort_with_status(shop_errmap.cart_not_found(locale))
        if request.quantity > 10:
            context.abort_with_status(
                shop_errmap.quantity_over_limit(locale, quantity=request.quantity, limit=10)
            )
        if request.card == "provider-down":
            context.abort_with_status(shop_errmap.payment_provider_down())
        if request.card == "busy":
            context.abort_with_status(error_code_errmap.api_too_many_requests())
        if request.card == "plain":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such card")
        return shop_pb2.PlaceOrderResponse(order_id="order-1")


@pytest.fixture(scope="module")
def python_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    shop_pb2_grpc.add_CheckoutServicer_to_server(Checkout(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _fail(addr, metadata=(), **fields):
    with grpc.insecure_channel(addr) as channel:
        stub = shop_pb2_grpc.CheckoutStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PlaceOrder(shop_pb2.PlaceOrderRequest(**fields), metadata=metadata, timeout=10)
    return caught.value


def test_the_generated_helpers_pass_mypy_strict():
    config = GENERATED / "mypy.ini"
    # googleapis-common-protos ships .pyi files for google.rpc but no
    # py.typed marker; mypy reads them when told to.
    config.write_text("[mypy]\nstrict = True\n\n[mypy-google.rpc.*]\nfollow_untyped_imports = True\n")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config),
         "errmap/v1/error_code_errmap.py", "shop/v1/shop_errmap.py"],
        cwd=GENERATED, capture_output=True, text=True, timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 2 source files" in checked.stdout


def test_a_grpcio_servers_generated_errors_read_by_a_grpcio_client(python_server):
    over = _fail(python_server, cart_id="c", quantity=12)
    assert over.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert over.details() == "The quantity 12 exceeds the limit of 10 per order."
    assert shop_errmap.is_quantity_over_limit(over)
    assert not shop_errmap.is_cart_not_found(over)
    assert not error_code_errmap.is_api_invalid_request(over), "another catalog's domain"
    entry = shop_errmap.entry_of(over)
    assert entry == shop_errmap.Entry(
        code=6,
        name="SHOP_ERROR_QUANTITY_OVER_LIMIT",
        reason="SHOP_ERROR_QUANTITY_OVER_LIMIT",
        domain="shop.example.com",
        grpc_code=grpc.StatusCode.INVALID_ARGUMENT,
        http_status=400,
        category="cart",
        message="The quantity 12 exceeds the limit of 10 per order.",
        retry_delay=None,
        params={"quantity": "12", "limit": "10"},
        locale="en-US",
        localized_message="The quantity 12 exceeds the limit of 10 per order.",
    )
    assert error_code_errmap.entry_of(over) is None
    # grpcio-status's reader accepts it: code and message agree.
    assert rpc_status.from_call(over).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    russian = _fail(python_server, metadata=[("accept-language", "ru")], cart_id="c", quantity=12)
    assert russian.details().isascii(), "grpc-message stays English"
    entry = shop_errmap.entry_of(russian)
    assert (entry.locale, entry.localized_message) == (
        "ru-RU", "Количество 12 превышает лимит в 10 на заказ.")

    down = _fail(python_server, cart_id="c", quantity=1, card="provider-down")
    assert shop_errmap.is_payment_provider_down(down)
    assert shop_errmap.entry_of(down).retry_delay == 10
    assert ("grpc-retry-pushback-ms", "10000") in down.trailing_metadata()

    busy = _fail(python_server, cart_id="c", quantity=1, card="busy")
    assert error_code_errmap.is_api_too_many_requests(busy)
    assert error_code_errmap.entry_of(busy).retry_delay == 1

    plain = _fail(python_server, cart_id="c", quantity=1, card="plain")
    assert shop_errmap.entry_of(plain) is None
    assert not shop_errmap.is_cart_not_found(plain)


def test_a_grpc_aio_client_reads_them_too(python_server):
    async def call():
        async with grpc.aio.insecure_channel(python_server) as channel:
            stub = shop_pb2_grpc.CheckoutStub(channel)
            try:
                await stub.PlaceOrder(shop_pb2.PlaceOrderRequest(cart_id="missing"), timeout=10)
            except grpc.aio.AioRpcError as error:
                return error
        raise AssertionError("the call succeeded")

    error = asyncio.run(call())
    assert shop_errmap.is_cart_not_found(error)
    assert shop_errmap.entry_of(error).code == 3


def test_the_readers_refuse_what_the_rust_reader_refuses():
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status.FromString(
        dict(shop_errmap.cart_not_found().trailing_metadata)[DETAILS]
    )
    assert shop_errmap.is_cart_not_found(status)
    # Two ErrorInfos: no catalog error.
    twice = status_pb2.Status()
    twice.CopyFrom(status)
    twice.details.add().Pack(error_details_pb2.ErrorInfo(
        reason="SHOP_ERROR_CART_NOT_FOUND", domain="shop.example.com"))
    assert shop_errmap.entry_of(twice) is None
    # Another domain, an unknown reason: no catalog error.
    for reason, domain in (("SHOP_ERROR_CART_NOT_FOUND", "other.example.com"),
                           ("SHOP_ERROR_NO_SUCH_THING", "shop.example.com")):
        other = status_pb2.Status(code=5, message="m")
        other.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
        assert shop_errmap.entry_of(other) is None
    for junk in (None, 7, "x", ValueError("x"), grpc.RpcError()):
        assert shop_errmap.entry_of(junk) is None
        assert not shop_errmap.is_cart_not_found(junk)
    # A missing template argument is a TypeError.
    with pytest.raises(TypeError):
        shop_errmap.quantity_over_limit(quantity=1)  # type: ignore[call-arg]
    # A locale the catalog lacks falls back to English; a language finds its region.
    german = status_pb2.Status.FromString(
        dict(shop_errmap.cart_not_found("de-AT").trailing_metadata)[DETAILS])
    english = status_pb2.Status.FromString(
        dict(shop_errmap.cart_not_found("fr").trailing_metadata)[DETAILS])
    localized = error_details_pb2.LocalizedMessage()
    german.details[1].Unpack(localized)
    assert localized.locale == "de-DE"
    english.details[1].Unpack(localized)
    assert localized.locale == "en-US"


class _Proc:
    """A process that prints `listening on ADDR` first, and stops when stdin closes."""

    def __init__(self, *argv):
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert line and line[0].startswith("listening on "), f"{argv[0]} printed no address"
        self.addr = line[0].split()[-1]

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=20)
        return self.proc.stdout.read()


def test_the_shops_rust_server_errors_read_by_the_python_helpers():
    shop = _Proc(SHOP_BIN, "127.0.0.1:0")
    try:
        over = _fail(shop.addr, cart_id="c1", quantity=12, card="visa")
        assert shop_errmap.is_quantity_over_limit(over)
        assert shop_errmap.entry_of(over).params == {"quantity": "12", "limit": "10"}
        down = _fail(shop.addr, cart_id="c1", quantity=1, card="provider-down")
        assert shop_errmap.is_payment_provider_down(down)
        assert shop_errmap.entry_of(down).retry_delay == 10
    finally:
        shop.stop()


def test_rust_reads_the_python_errors_and_its_layer_passes_them_untouched(python_server):
    import json

    relay = _Proc(RELAY_BIN, "127.0.0.1:0", python_server)
    try:
        cases = [
            dict(cart_id="c", quantity=12),
            dict(cart_id="missing"),
            dict(cart_id="c", quantity=1, card="provider-down"),
        ]
        for fields in cases:
            direct = _fail(python_server, **fields)
            relayed = _fail(relay.addr, **fields)
            # The response layer let the status through byte for byte.
            assert relayed.code() == direct.code()
            assert relayed.details() == direct.details()
            assert dict(relayed.trailing_metadata())[DETAILS] == dict(direct.trailing_metadata())[DETAILS]
            assert shop_errmap.entry_of(relayed) == shop_errmap.entry_of(direct)
        # A plain status is no catalog error: the layer rewrites it to
        # errmap's code for NOT_FOUND (47), and says nothing of the original.
        plain = _fail(relay.addr, cart_id="c", quantity=1, card="plain")
        assert plain.code() == grpc.StatusCode.NOT_FOUND
        assert error_code_errmap.is_api_item_not_found(plain)
        assert "no such card" not in plain.details()
    finally:
        lines = [json.loads(line) for line in relay.stop().splitlines() if line.strip()]
    # What ErrorStatusExt read from each upstream status, in call order.
    assert [(r["shop_reason"], r["details"]) for r in lines] == [
        ("SHOP_ERROR_QUANTITY_OVER_LIMIT", "ok"),
        ("SHOP_ERROR_CART_NOT_FOUND", "ok"),
        ("SHOP_ERROR_PAYMENT_PROVIDER_DOWN", "ok"),
        (None, "the status carries no details"),
    ], lines
    assert lines[0]["metadata"] == {"code": "6", "quantity": "12", "limit": "10"}
    assert lines[2]["retry_ms"] == 10000
    assert lines[3]["grpc_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def _protoc(*args):
    """grpcio-tools' protoc, run as a process, with the plugin."""
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--plugin=protoc-gen-errmap={PLUGIN}",
         f"-I{PROTO}", f"-I{WELL_KNOWN}", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "parameter, cause",
    [
        ("lang=cobol", 'protoc-gen-errmap: unknown lang "cobol"; use python, ts or go'),
        ("paths=import", "protoc-gen-errmap: no lang given; pass lang=python, lang=ts or lang=go"),
    ],
)
def test_protoc_reports_a_bad_parameter_in_one_line(parameter, cause):
    out = tempfile.mkdtemp(prefix="errmap-plugin-")
    ran = _protoc(f"--errmap_out={parameter}:{out}", "errmap/v1/error_code.proto")
    assert ran.returncode != 0
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("--errmap_out: " + cause), lines[0]


def test_protoc_reports_a_bad_catalog_naming_the_value():
    fixtures = ROOT / "errmap-build" / "tests" / "fixtures"
    out = tempfile.mkdtemp(prefix="errmap-plugin-")
    ran = _protoc(f"-I{fixtures}", f"--errmap_out=lang=python:{out}", "bad_reason.proto")
    assert ran.returncode != 0
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("--errmap_out: protoc-gen-errmap: bad_reason.proto:"), lines[0]
    assert "TRAILING_UNDERSCORE_" in lines[0] and "lowerCase" in lines[0], lines[0]
    assert list(pathlib.Path(out).iterdir()) == [], "nothing written"
