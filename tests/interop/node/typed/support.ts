// What the typed tests share: the binaries under test, and starting and
// stopping a process that prints its address on its first line.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** This folder once compiled (typed/build). */
export const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../../../../..");
export const ERRMAP_BIN = process.env.ERRMAP_BIN ?? path.join(ROOT, "target/debug/errmap");
export const SHOP_BIN = process.env.SHOP_BIN ?? path.join(ROOT, "target/debug/examples/shop-server");

/** Starts `bin` and waits (30 s at most) for the address it prints first. */
export async function startProcess(
  bin: string,
  args: string[],
): Promise<{ proc: ChildProcess; addr: string }> {
  const proc = spawn(bin, args, { stdio: ["pipe", "pipe", "ignore"] });
  const stdout = proc.stdout;
  assert.ok(stdout);
  const addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} printed no address`)), 30000);
    createInterface({ input: stdout }).once("line", (line: string) => {
      clearTimeout(timer);
      resolve(line.trim().replace(/^listening on /, ""));
    });
  });
  return { proc, addr };
}

/** Stops a process (stdin closed, then SIGTERM) and gives its exit code. */
export async function stopProcess(proc: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  proc.stdin?.end();
  proc.kill("SIGTERM");
  return Promise.race([
    exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no exit in 20 s")), 20000)),
  ]);
}
