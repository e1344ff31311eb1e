"""A catalog's life, from Python with the stock gRPC tooling: message
templates filled by a Rust service and read with `rpc_status.from_call`,
and live reloads of `errmap serve --catalog` under a client that keeps
calling.

The shop example's server (SHOP_BIN, `cargo build -p shop-example
--example shop-server`) serves the shop's Checkout with its templated
codes; the reload test runs the real `errmap serve` binary (ERRMAP_BIN).
"""

import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc

from test_interop import BIN, PROTO, ROOT, Server, catalog_pb2, options_pb2, rich

SHOP_PROTO = ROOT / "examples" / "shop" / "proto"
SHOP_BIN = os.environ.get(
    "SHOP_BIN", str(ROOT / "target" / "debug" / "examples" / "shop-server")
)
WELL_KNOWN = pathlib.Path(protoc.__file__).parent / "_proto"


def _compile_shop(proto_root, out, *extra):
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{PROTO}",
            f"-I{WELL_KNOWN}",
            *extra,
            "shop/v1/shop.proto",
        ]
    )
    assert rc == 0, f"grpcio-tools compiles {proto_root}/shop/v1/shop.proto"


# test_interop generated the shop's messages, stubs and typed helpers.
from shop.v1 import shop_errmap, shop_pb2, shop_pb2_grpc  # noqa: E402


class ShopServer:
    """The shop example's server, stopped by closing its stdin."""

    def __init__(self):
        assert pathlib.Path(SHOP_BIN).exists(), f"{SHOP_BIN} is not built"
        self.proc = subprocess.Popen(
            [SHOP_BIN, "127.0.0.1:0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.channel = grpc.insecure_channel(line.removeprefix("listening on "))
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = shop_pb2_grpc.CheckoutStub(self.channel)

    def stop(self):
        self.channel.close()
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0


def _template(name):
    value = shop_pb2.ShopError.DESCRIPTOR.values_by_name[name]
    return value.GetOptions().Extensions[options_pb2.error]


def test_a_filled_template_reads_back_in_russian_with_from_call():
    shop = ShopServer()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            shop.stub.PlaceOrder(
                shop_pb2.PlaceOrderRequest(cart_id="c1", quantity=12, card="ok"),
                metadata=[("accept-language", "ru-RU")],
                timeout=10,
            )
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        # from_call itself checks that code and message equal the headers'.
        status, found = rich(error)
        facts = _template("SHOP_ERROR_QUANTITY_OVER_LIMIT")
        assert facts.message == "The quantity {quantity} exceeds the limit of {limit} per order."
        assert error.details() == "The quantity 12 exceeds the limit of 10 per order."
        assert status.message == error.details()
        # Read with the helpers protoc-gen-errmap generated for the shop.
        assert shop_errmap.is_quantity_over_limit(error)
        entry = shop_errmap.entry_of(error)
        assert entry.reason == "SHOP_ERROR_QUANTITY_OVER_LIMIT"
        assert entry.domain == "shop.example.com"
        assert entry.code == 6
        assert entry.params == {"quantity": "12", "limit": "10"}
        assert entry.message == error.details()
        assert entry.locale == "ru-RU"
        assert entry.localized_message == "Количество 12 превышает лимит в 10 на заказ."
        assert facts.messages["ru-RU"].replace("{quantity}", "12").replace("{limit}", "10") == (
            entry.localized_message
        )
        # BadRequest is beyond the helpers: grpcio-status's reader.
        assert found["BadRequest"].field_violations[0].field == "quantity"

        # The other template, in English: amounts in cents.
        with pytest.raises(grpc.RpcError) as caught:
            shop.stub.PlaceOrder(
                shop_pb2.PlaceOrderRequest(cart_id="c1", quantity=5, card="small"),
                timeout=10,
            )
        assert caught.value.details() == "The amount 6250 exceeds the card's limit of 5000."
        entry = shop_errmap.entry_of(caught.value)
        assert shop_errmap.is_amount_over_limit(caught.value)
        assert entry.params == {"amount": "6250", "limit": "5000"}
        assert entry.locale == "en-US"
        assert entry.localized_message == caught.value.details()
    finally:
        shop.stop()


def _shop_set(out, extra_code=None, grpc_code="FAILED_PRECONDITION"):
    """The shop's catalog as a descriptor set at `out`, optionally with one
    more code (number `extra_code`), compiled by grpcio-tools."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="errmap-shop-variant-"))
    (root / "shop" / "v1").mkdir(parents=True)
    text = (SHOP_PROTO / "shop" / "v1" / "shop.proto").read_text()
    text = text.replace(
        'grpc_code: "FAILED_PRECONDITION"\n    http_status: 402\n    category: "payment"\n'
        '    message: "The card was declined',
        f'grpc_code: "{grpc_code}"\n    http_status: 402\n    category: "payment"\n'
        '    message: "The card was declined',
    )
    if extra_code is not None:
        value = (
            f"  SHOP_ERROR_EXTRA_{extra_code} = {extra_code} [(errmap.v1.error) = {{\n"
            '    grpc_code: "NOT_FOUND" http_status: 404 category: "extra"\n'
            f'    message: "Extra code {extra_code}."\n'
            f'    messages: {{key: "de-DE", value: "Zusatzcode {extra_code}."}}\n'
            f'    messages: {{key: "ru-RU", value: "Дополнительный код {extra_code}."}}\n'
            "  }];\n}\n\n// Places orders."
        )
        text = text.replace("}\n\n// Places orders.", value, 1)
    (root / "shop" / "v1" / "shop.proto").write_text(text)
    _compile_shop(root, None, "--include_imports", f"--descriptor_set_out={out}")
    shutil.rmtree(root)


def _answers(stub, code):
    try:
        d = stub.GetError(
            catalog_pb2.GetErrorRequest(code=code, domain="shop.example.com"), timeout=5
        ).error
        return d.name == f"SHOP_ERROR_EXTRA_{code}"
    except grpc.RpcError:
        return False


def _wait_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_twenty_reloads_under_a_client_that_keeps_calling():
    work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-reload-"))
    served = work / "shop.binpb"
    _shop_set(served)
    s = Server("--catalog", str(served))
    failures, calls = [], [0]
    stop = threading.Event()

    def call_in_a_loop():
        # Codes present in every version: a reload must never fail a call.
        while not stop.is_set():
            for code in (1, 6, 7):
                try:
                    d = s.stub.GetError(
                        catalog_pb2.GetErrorRequest(code=code, domain="shop.example.com"),
                        timeout=5,
                    ).error
                    if d.number != code:
                        failures.append(f"code {code} answered as {d.number}")
                except grpc.RpcError as e:
                    failures.append(f"code {code}: {e.code()} {e.details()}")
                calls[0] += 1

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        for i in range(20):
            code = 100 + i
            staged = work / f"staged-{i}.binpb"
            _shop_set(staged, extra_code=code)
            # Swapped by rename, as a deploy tool writes a file.
            os.replace(staged, served)
            assert _wait_until(lambda: _answers(s.stub, code), 5), f"reload {i}: {code} not served in 5 s"
            # The previous version's extra code is gone.
            if i > 0:
                assert not _answers(s.stub, code - 1)
            if i in (0, 19):
                # Reflection serves the catalog as loaded now, options
                # included: a fresh client resolves the new value.
                pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(s.channel))
                enum = pool.FindEnumTypeByName("shop.v1.ShopError")
                assert f"SHOP_ERROR_EXTRA_{code}" in enum.values_by_name
                assert f"SHOP_ERROR_EXTRA_{code - 1}" not in enum.values_by_name
    finally:
        stop.set()
        caller.join(timeout=30)
        assert s.terminate() == 0
        shutil.rmtree(work)
    assert not failures, failures[:5]
    assert calls[0] > 20, f"the client made only {calls[0]} calls"
