// The TypeScript helpers that protoc-gen-errmap generates (gen/*_errmap.ts),
// against real peers: a connect-node server throws them; Connect's gRPC
// client and @grpc/grpc-js read them; the same readers read the errors of
// the real `errmap serve` (ERRMAP_BIN) and of the shop's Rust server
// (SHOP_BIN). `npm run typed` generates gen/ with buf and compiles this file
// with `tsc --strict`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";

import grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";

import {
  Checkout,
  PlaceOrderRequestSchema,
  PlaceOrderResponseSchema,
} from "./gen/shop/v1/shop_pb.js";
import { ErrorCatalog } from "./gen/errmap/v1/catalog_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";
import * as shop from "./gen/shop/v1/shop_errmap.js";
import * as errmap from "./gen/errmap/v1/error_code_errmap.js";
import { ERRMAP_BIN, HERE, SHOP_BIN, startProcess, stopProcess } from "./support.js";

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("the call succeeded");
}

/** The shop's checkout in connect-node, failing with the generated builders. */
function routes(router: ConnectRouter): void {
  router.service(Checkout, {
    placeOrder(request, context) {
      const locale = context.requestHeader.get("accept-language") ?? "en-US";
      if (request.cartId === "missing") throw shop.cartNotFound({ locale });
      if (request.quantity > 10) {
        throw shop.quantityOverLimit({ quantity: request.quantity, limit: 10 }, { locale });
      }
      if (request.card === "provider-down") throw shop.paymentProviderDown();
      if (request.card === "plain") throw new ConnectError("no such card", Code.NotFound);
      if (request.card === "busy") throw errmap.apiTooManyRequests();
      return { orderId: "order-1" };
    },
  });
}

async function startConnectServer(): Promise<{ server: http2.Http2Server; url: string; addr: string }> {
  const server = http2.createServer(connectNodeAdapter({ routes }));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}`, addr: `127.0.0.1:${port}` };
}

/** A @grpc/grpc-js call of PlaceOrder, without generated grpc-js stubs. */
function grpcJsPlaceOrder(
  addr: string,
  request: { cartId?: string; quantity?: number; card?: string },
  metadata = new grpc.Metadata(),
): Promise<unknown> {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      "/shop.v1.Checkout/PlaceOrder",
      (value: typeof request) =>
        Buffer.from(toBinary(PlaceOrderRequestSchema, create(PlaceOrderRequestSchema, value))),
      (bytes: Buffer) => fromBinary(PlaceOrderResponseSchema, bytes),
      request,
      metadata,
      { deadline: Date.now() + 10000 },
      (error, reply) => {
        client.close();
        if (error) reject(error);
        else resolve(reply);
      },
    );
  });
}

test("a connect-node server's generated errors, read by Connect and by grpc-js", async () => {
  const { server, url, addr } = await startConnectServer();
  try {
    const client = createClient(Checkout, createGrpcTransport({ baseUrl: url }));

    // A template: the arguments fill the message and go to ErrorInfo.metadata.
    const over = await failure(client.placeOrder({ cartId: "c", quantity: 12, card: "ok" }));
    assert.ok(over instanceof ConnectError);
    assert.equal(over.code, Code.InvalidArgument);
    assert.equal(over.rawMessage, "The quantity 12 exceeds the limit of 10 per order.");
    assert.equal(shop.isQuantityOverLimit(over), true);
    assert.equal(shop.isCartNotFound(over), false);
    assert.equal(errmap.isApiInvalidRequest(over), false, "another catalog's domain");
    const entry = shop.entryOf(over);
    assert.ok(entry);
    assert.equal(entry.reason, "SHOP_ERROR_QUANTITY_OVER_LIMIT");
    assert.equal(entry.name, entry.reason);
    assert.equal(entry.domain, shop.SHOP_ERROR_DOMAIN);
    assert.equal(entry.code, 6);
    assert.equal(entry.httpStatus, 400);
    assert.equal(entry.category, "cart");
    assert.deepEqual(entry.params, { quantity: "12", limit: "10" });
    assert.equal(entry.message, "The quantity 12 exceeds the limit of 10 per order.");
    assert.equal(entry.locale, "en-US");
    assert.equal(entry.retryDelay, undefined);
    assert.equal(errmap.entryOf(over), undefined);

    // The locale picks the LocalizedMessage; grpc-message stays English.
    const german = await failure(
      client.placeOrder({ cartId: "c", quantity: 12 }, { headers: { "accept-language": "de" } }),
    );
    assert.equal(shop.entryOf(german)?.locale, "de-DE");
    assert.equal(
      shop.entryOf(german)?.localizedMessage,
      "Die Menge 12 übersteigt die Grenze von 10 pro Bestellung.",
    );

    // A delay: RetryInfo, and the pushback trailer gRFC A6 clients obey.
    const down = await failure(client.placeOrder({ cartId: "c", quantity: 1, card: "provider-down" }));
    assert.equal(shop.isPaymentProviderDown(down), true);
    assert.equal(shop.entryOf(down)?.retryDelay, 10);
    assert.ok(down instanceof ConnectError);
    assert.equal(down.metadata.get("grpc-retry-pushback-ms"), "10000");

    // A plain error is no catalog error.
    const plain = await failure(client.placeOrder({ cartId: "c", quantity: 1, card: "plain" }));
    assert.equal(shop.entryOf(plain), undefined);
    assert.equal(shop.isCartNotFound(plain), false);

    // The same errors through @grpc/grpc-js, read from grpc-status-details-bin.
    const viaGrpcJs = await failure(grpcJsPlaceOrder(addr, { cartId: "c", quantity: 12 }));
    assert.equal(shop.isQuantityOverLimit(viaGrpcJs), true);
    assert.deepEqual(shop.entryOf(viaGrpcJs)?.params, { quantity: "12", limit: "10" });
    const missing = await failure(grpcJsPlaceOrder(addr, { cartId: "missing", quantity: 1 }));
    assert.equal(shop.isCartNotFound(missing), true);
    assert.equal((missing as grpc.ServiceError).code, grpc.status.NOT_FOUND);
    const busy = await failure(grpcJsPlaceOrder(addr, { cartId: "c", quantity: 1, card: "busy" }));
    assert.equal(errmap.isApiTooManyRequests(busy), true);
    assert.equal(errmap.entryOf(busy)?.retryDelay, 1);
    assert.deepEqual((busy as grpc.ServiceError).metadata.get("grpc-retry-pushback-ms"), ["1000"]);
    const plainGrpcJs = await failure(grpcJsPlaceOrder(addr, { cartId: "c", quantity: 1, card: "plain" }));
    assert.equal(shop.entryOf(plainGrpcJs), undefined);
  } finally {
    server.close();
  }
});

test("the readers refuse what the Rust reader refuses", () => {
  const error = shop.cartNotFound();
  assert.equal(shop.isCartNotFound(error), true);
  // A google.rpc.Status is read too.
  const status = create(StatusSchema, { code: Code.NotFound, message: "m" });
  assert.equal(shop.entryOf(status), undefined, "no ErrorInfo");
  // Two ErrorInfos: not a catalog error.
  const twice = new ConnectError("m", Code.NotFound, undefined, [...error.details, ...error.details] as never);
  assert.equal(shop.isCartNotFound(twice), false);
  // A grpc-js error whose details disagree with its status.
  const bin = Buffer.from(
    toBinary(StatusSchema, create(StatusSchema, { code: Code.Internal, message: "other" })),
  );
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", bin);
  assert.equal(shop.entryOf({ code: grpc.status.NOT_FOUND, details: "m", metadata }), undefined);
  // Garbage is no error, and never a throw.
  for (const junk of [undefined, null, 7, "x", {}, new Error("x"), { code: 5, metadata: {} }]) {
    assert.equal(shop.entryOf(junk), undefined);
  }
  // A Status whose ErrorInfo does not decode: no catalog error, no throw.
  const broken = create(StatusSchema, {
    code: Code.NotFound,
    message: "m",
    details: [{ typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: new Uint8Array([0x0a, 0xff]) }],
  });
  assert.equal(shop.entryOf(broken), undefined);
  const brokenMetadata = new grpc.Metadata();
  brokenMetadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, broken)));
  assert.equal(shop.entryOf({ code: grpc.status.NOT_FOUND, details: "m", metadata: brokenMetadata }), undefined);
  const garbage = new grpc.Metadata();
  garbage.set("grpc-status-details-bin", Buffer.from([0xff, 0xff, 0xff]));
  assert.equal(shop.entryOf({ code: 5, details: "", metadata: garbage }), undefined);
  // A missing template argument is a TypeError, not a message with a hole.
  assert.throws(
    () => shop.quantityOverLimit({ quantity: 1 } as unknown as { quantity: number; limit: number }),
    TypeError,
  );
});

test("errmap serve's errors, read by the generated helpers over Connect and grpc-js", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "errmap-typed-"));
  const secretFile = path.join(dir, "secret");
  fs.writeFileSync(secretFile, "typed interop secret, long enough\n");
  const open = await startProcess(ERRMAP_BIN, ["serve", "--addr", "127.0.0.1:0"]);
  const guarded = await startProcess(ERRMAP_BIN, [
    "serve", "--addr", "127.0.0.1:0", "--auth-jwt-secret-file", secretFile, "--auth-audience", "errmap",
  ]);
  try {
    const client = createClient(ErrorCatalog, createGrpcTransport({ baseUrl: `http://${open.addr}` }));
    const miss = await failure(client.getError({ key: { case: "code", value: 48 } }));
    assert.equal(errmap.isApiItemNotFound(miss), true);
    const entry = errmap.entryOf(miss);
    assert.equal(entry?.code, 47);
    assert.equal(entry?.grpcCode, Code.NotFound);
    assert.deepEqual(entry?.params, { requestedCode: "48" });

    const russian = await failure(
      client.getError({ key: { case: "code", value: 48 } }, { headers: { "accept-language": "ru" } }),
    );
    assert.equal(errmap.entryOf(russian)?.locale, "ru-RU");

    const locked = createClient(ErrorCatalog, createGrpcTransport({ baseUrl: `http://${guarded.addr}` }));
    const noToken = await failure(locked.getError({ key: { case: "code", value: 1 } }));
    assert.equal(errmap.isAuthRequired(noToken), true);
    assert.equal(errmap.entryOf(noToken)?.code, 21);
  } finally {
    assert.equal(await stopProcess(open.proc), 0);
    assert.equal(await stopProcess(guarded.proc), 0);
  }
});

test("the shop's Rust server's errors, read by the generated TypeScript", async () => {
  const { proc, addr } = await startProcess(SHOP_BIN, ["127.0.0.1:0"]);
  try {
    const client = createClient(Checkout, createGrpcTransport({ baseUrl: `http://${addr}` }));
    const over = await failure(client.placeOrder({ cartId: "c1", quantity: 12, card: "visa" }));
    assert.equal(shop.isQuantityOverLimit(over), true);
    assert.deepEqual(shop.entryOf(over)?.params, { quantity: "12", limit: "10" });
    const down = await failure(grpcJsPlaceOrder(addr, { cartId: "c1", quantity: 1, card: "provider-down" }));
    assert.equal(shop.isPaymentProviderDown(down), true);
    assert.equal(shop.entryOf(down)?.retryDelay, 10);
  } finally {
    await stopProcess(proc);
  }
});

test("the README's TypeScript snippet, compiled by tsc --strict, reads a miss", async () => {
  const server = await startProcess(ERRMAP_BIN, ["serve", "--addr", "127.0.0.1:0"]);
  try {
    const ran = spawnSync(process.execPath, [path.join(HERE, "readme_miss.js")], {
      env: { ...process.env, ERRMAP_ADDR: server.addr },
      encoding: "utf8",
      timeout: 60000,
    });
    assert.equal(ran.status, 0, ran.stderr);
    assert.equal(ran.stdout, "no such code: 48\n");
  } finally {
    assert.equal(await stopProcess(server.proc), 0);
  }
});
