// What the browser and page tests share: the errmap binary, Debian's
// Chromium through puppeteer-core, and starting `errmap serve`.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../../..');
export const BIN = process.env.ERRMAP_BIN ?? path.join(ROOT, 'target/debug/errmap');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const running = [];

/**
 * `errmap serve --addr 127.0.0.1:0 ...args`; resolves to its URL. Stopped
 * by `stopAll`.
 */
export async function errmap(...args) {
  const proc = spawn(BIN, ['serve', '--addr', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  running.push(proc);
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('errmap serve printed no address')), 30000);
    proc.once('exit', (code) => reject(new Error(`errmap serve exited with ${code}`)));
    createInterface({ input: proc.stdout }).once('line', (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
  });
  return `http://${addr}`;
}

/** Stops every server `errmap` started. */
export function stopAll() {
  for (const proc of running.splice(0)) proc.kill('SIGTERM');
}

/**
 * Headless Chromium, as this machine's closed network wants it: no
 * background networking, no component updates, a fresh profile.
 */
export function launchChromium() {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'errmap-chromium-')),
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
