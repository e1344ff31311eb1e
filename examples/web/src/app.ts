// A front-end that calls errmap over gRPC-Web or the Connect protocol and
// branches on the catalog code of a failure: connect-web reads it from
// grpc-status-details-bin (gRPC-Web) or from the error's JSON body
// (Connect), and the page reads it the same way from either.
//
// Query parameters: `server` (the errmap server, default
// http://127.0.0.1:50051), `lang` (sent as accept-language; default the
// browser's languages) and `transport` (grpc-web, the default, or connect;
// the page's toggle changes it).

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ErrorCatalog, type ErrorDescriptor } from "./gen/errmap/v1/catalog_pb.js";
import {
  ErrorInfoSchema,
  LocalizedMessageSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("server") ?? "http://127.0.0.1:50051";
const clients = {
  "grpc-web": createClient(ErrorCatalog, createGrpcWebTransport({ baseUrl, useBinaryFormat: true })),
  // JSON, and GET for the lookups (they have no side effects), which
  // browsers and CDNs may cache.
  connect: createClient(ErrorCatalog, createConnectTransport({ baseUrl, useHttpGet: true })),
};
const language = params.get("lang") ?? navigator.languages.join(",");

/** Retries of a 44 or 49, each after the server's RetryInfo delay. */
const MAX_RETRIES = 3;
/** The longest server-given delay the page waits. */
const MAX_DELAY_MS = 30_000;

const $ = (id: string) => document.getElementById(id) as HTMLElement;
const input = (id: string) => document.getElementById(id) as HTMLInputElement;

function setState(text: string) {
  $("state").textContent = text;
}

function showFound(d: ErrorDescriptor) {
  $("failure").hidden = true;
  $("found").hidden = false;
  $("name").textContent = d.name;
  $("found-message").textContent = d.localizedMessage || d.message;
}

function showFailure(reason: string, code: string, message: string, action: string) {
  $("found").hidden = true;
  $("failure").hidden = false;
  $("reason").textContent = reason;
  $("code").textContent = code;
  $("message").textContent = message;
  $("action").textContent = action;
  $("action").hidden = action === "";
}

function delayMs(seconds: bigint, nanos: number): number {
  return Math.min(Number(seconds) * 1000 + Math.floor(nanos / 1e6), MAX_DELAY_MS);
}

async function lookup(key: string, token: string, attempt = 0): Promise<void> {
  const headers = new Headers();
  if (token) headers.set("authorization", `Bearer ${token}`);
  if (language) headers.set("accept-language", language);
  const request = /^-?\d+$/.test(key)
    ? { key: { case: "code" as const, value: Number(key) } }
    : { key: { case: "name" as const, value: key.toUpperCase() } };
  try {
    const client = input("transport-connect").checked ? clients.connect : clients["grpc-web"];
    const { error } = await client.getError(request, { headers, timeoutMs: 10_000 });
    if (error) showFound(error);
    setState("done");
  } catch (thrown) {
    const err = ConnectError.from(thrown);
    const [info] = err.findDetails(ErrorInfoSchema);
    const [localized] = err.findDetails(LocalizedMessageSchema);
    const [retry] = err.findDetails(RetryInfoSchema);
    if (!info) {
      // No readable details: a network failure, or a server that does not
      // expose grpc-status-details-bin to this origin.
      showFailure("", "", err.rawMessage, `Not a catalog error (${Code[err.code]}).`);
      setState("done");
      return;
    }
    const code = info.metadata["code"] ?? "";
    const message = localized?.message ?? err.rawMessage;
    switch (info.reason) {
      case "AUTH_REQUIRED":
      case "AUTH_INVALID_TOKEN":
        showFailure(info.reason, code, message, "Sign in: paste a token and look up again.");
        input("token").focus();
        break;
      case "AUTH_EXPIRED_TOKEN":
        input("token").value = "";
        showFailure(info.reason, code, message, "Your token has expired: get a new one and look up again.");
        input("token").focus();
        break;
      case "API_TOO_MANY_REQUESTS":
      case "API_TRY_AGAIN_LATER":
        if (retry?.retryDelay && attempt < MAX_RETRIES) {
          const wait = delayMs(retry.retryDelay.seconds, retry.retryDelay.nanos);
          showFailure(info.reason, code, message, `Retrying in ${wait / 1000} s.`);
          setState(`retrying (${attempt + 1})`);
          await new Promise((resolve) => setTimeout(resolve, wait));
          return lookup(key, token, attempt + 1);
        }
        showFailure(info.reason, code, message, "The server is busy; try again later.");
        break;
      default:
        showFailure(info.reason, code, message, "");
    }
    setState("done");
  }
}

if (params.get("transport") === "connect") input("transport-connect").checked = true;

$("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  setState("looking up");
  void lookup(input("key").value.trim(), input("token").value.trim());
});
setState("ready");
