// The Connect protocol against the real `errmap serve` (ERRMAP_BIN), with
// @connectrpc/connect-node's createConnectTransport: HTTP/1.1 and HTTP/2,
// JSON and binary, POST and GET (useHttpGet, for the lookups marked
// NO_SIDE_EFFECTS). Errors are read with ConnectError.findDetails and with
// the helpers protoc-gen-errmap generated.

import { test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

import { create } from "@bufbuild/protobuf";
import { ErrorCatalog, GetErrorRequestSchema } from "./gen/errmap/v1/catalog_pb.js";
import { ErrorInfoSchema, LocalizedMessageSchema } from "./gen/google/rpc/error_details_pb.js";
import { entryOf, isApiItemNotFound, isAuthRequired } from "./gen/errmap/v1/error_code_errmap.js";
import { ERRMAP_BIN, startProcess, stopProcess as stop } from "./support.js";

/** `errmap serve` on 127.0.0.1:0 with `args`. */
function serve(...args: string[]): Promise<{ proc: ChildProcess; addr: string }> {
  return startProcess(ERRMAP_BIN, ["serve", "--addr", "127.0.0.1:0", ...args]);
}

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

const variants: { name: string; transport: (addr: string) => Transport }[] = [];
for (const httpVersion of ["1.1", "2"] as const) {
  for (const useBinaryFormat of [false, true]) {
    for (const useHttpGet of [false, true]) {
      variants.push({
        name: `HTTP/${httpVersion} ${useBinaryFormat ? "binary" : "JSON"} ${useHttpGet ? "GET" : "POST"}`,
        transport: (addr) =>
          createConnectTransport({ baseUrl: `http://${addr}`, httpVersion, useBinaryFormat, useHttpGet }),
      });
    }
  }
}

test("hits, misses and Russian over every Connect transport", async () => {
  const { proc, addr } = await serve();
  try {
    for (const variant of variants) {
      const client = createClient(ErrorCatalog, variant.transport(addr));
      const hit = await client.getError({ key: { case: "code", value: 21 } });
      assert.equal(hit.error?.name, "AUTH_REQUIRED", variant.name);

      const miss = await failure(client.getError({ key: { case: "code", value: 48 } }));
      assert.equal(miss.code, Code.NotFound, variant.name);
      const [info] = miss.findDetails(ErrorInfoSchema);
      assert.equal(info?.reason, "API_ITEM_NOT_FOUND", variant.name);
      assert.equal(info?.domain, "auth.errmap.dev");
      assert.equal(info?.metadata.code, "47");
      assert.equal(isApiItemNotFound(miss), true, variant.name);
      assert.deepEqual(entryOf(miss)?.params, { requestedCode: "48" });

      const russian = await failure(
        client.getError({ key: { case: "code", value: 48 } }, { headers: { "accept-language": "ru" } }),
      );
      assert.equal(russian.findDetails(LocalizedMessageSchema)[0]?.locale, "ru-RU", variant.name);
    }
  } finally {
    assert.equal(await stop(proc), 0);
  }
});

test("21 without a token, 40 for too large, 43 for no such method", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "errmap-connect-"));
  const secret = path.join(dir, "secret");
  fs.writeFileSync(secret, "connect interop secret, long enough\n");
  const guarded = await serve("--auth-jwt-secret-file", secret, "--auth-audience", "errmap");
  const small = await serve("--max-request-size", "1024");
  try {
    for (const variant of variants.filter((v) => !v.name.endsWith("GET"))) {
      const locked = createClient(ErrorCatalog, variant.transport(guarded.addr));
      const noToken = await failure(locked.getError({ key: { case: "code", value: 1 } }));
      assert.equal(noToken.code, Code.Unauthenticated, variant.name);
      assert.equal(isAuthRequired(noToken), true, variant.name);

      const client = createClient(ErrorCatalog, variant.transport(small.addr));
      const big = await failure(client.getError({ key: { case: "name", value: "A".repeat(4096) } }));
      assert.equal(big.code, Code.InvalidArgument, variant.name);
      assert.equal(big.findDetails(ErrorInfoSchema)[0]?.metadata.code, "40", variant.name);

      // A method the server does not have: the lookup's descriptor under
      // another name.
      const nope = { ...ErrorCatalog.method.getError, name: "Nope", localName: "nope" };
      const transport = variant.transport(small.addr);
      const unknown = await failure(
        transport.unary(
          nope,
          undefined,
          undefined,
          undefined,
          create(GetErrorRequestSchema, { key: { case: "code", value: 1 } }),
          undefined,
        ),
      );
      assert.equal(unknown.code, Code.Unimplemented, variant.name);
      assert.equal(unknown.findDetails(ErrorInfoSchema)[0]?.reason, "API_METHOD_NOT_FOUND", variant.name);
    }
  } finally {
    assert.equal(await stop(guarded.proc), 0);
    assert.equal(await stop(small.proc), 0);
  }
});

test("44 with Retry-After: a body over the shared intake budget", async () => {
  // Bodies being read share --intake-memory: one larger than all of it
  // (and under --max-request-size) is shed like a call over a limit.
  const { proc, addr } = await serve("--intake-memory", "1024");
  try {
    for (const variant of variants.filter((v) => !v.name.endsWith("GET"))) {
      const client = createClient(ErrorCatalog, variant.transport(addr));
      const shed = await failure(client.getError({ key: { case: "name", value: "A".repeat(4096) } }));
      assert.equal(shed.code, Code.ResourceExhausted, variant.name);
      assert.equal(shed.findDetails(ErrorInfoSchema)[0]?.metadata.code, "44", variant.name);
      assert.equal(shed.metadata.get("retry-after"), "1", variant.name);
      // The budget is given back: the next call passes.
      const hit = await client.getError({ key: { case: "code", value: 21 } });
      assert.equal(hit.error?.name, "AUTH_REQUIRED", variant.name);
    }
  } finally {
    assert.equal(await stop(proc), 0);
  }
});

/**
 * A connection on a slow link: the first write (the head of a request, as
 * Node's HTTP/1.1 client sends it) goes out at once; what follows (the body)
 * goes `holdMs` later. `link.released` says whether it has.
 */
function slowLink(addr: string, holdMs: number, link: { released: boolean }): net.Socket {
  const colon = addr.lastIndexOf(":");
  const socket = net.connect({ host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) });
  const write = socket.write.bind(socket) as (chunk: string | Uint8Array) => boolean;
  let held: (string | Uint8Array)[] | undefined;
  socket.write = ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
    const done = rest.find((r) => typeof r === "function") as (() => void) | undefined;
    if (held === undefined) {
      held = [];
      setTimeout(() => {
        link.released = true;
        if (!socket.destroyed) {
          for (const b of held ?? []) write(b);
        }
      }, holdMs).unref();
      write(chunk);
    } else {
      held.push(chunk);
    }
    done?.();
    return true;
  }) as typeof socket.write;
  return socket;
}

test("Connect-Timeout-Ms is the call's deadline: deadline_exceeded from the server", async () => {
  const { proc, addr } = await serve();
  try {
    for (const useBinaryFormat of [false, true]) {
      // The request's last byte arrives 3 s late; its deadline is 300 ms.
      // The deadline goes as the header alone (no timeoutMs), so that the
      // client's own timer does not race the server's answer.
      const link = { released: false };
      const transport = createConnectTransport({
        baseUrl: `http://${addr}`,
        httpVersion: "1.1",
        useBinaryFormat,
        nodeOptions: { createConnection: () => slowLink(addr, 5000, link) },
      });
      const client = createClient(ErrorCatalog, transport);
      const late = await failure(
        client.getError({ key: { case: "code", value: 21 } }, { headers: { "connect-timeout-ms": "300" } }),
      );
      assert.equal(late.code, Code.DeadlineExceeded, `${useBinaryFormat}: ${late.message}`);
      assert.match(late.rawMessage, /Connect-Timeout-Ms/);
      // Answered at the deadline, before the request was whole.
      assert.equal(link.released, false, "the answer came once the request was whole");
    }
    // With a deadline it meets, the same call answers.
    const client = createClient(ErrorCatalog, variants[0].transport(addr));
    const hit = await client.getError({ key: { case: "code", value: 21 } }, { timeoutMs: 10_000 });
    assert.equal(hit.error?.name, "AUTH_REQUIRED");
  } finally {
    assert.equal(await stop(proc), 0);
  }
});
