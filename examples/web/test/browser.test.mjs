// The example page in Debian's Chromium (headless, driven by
// puppeteer-core), loaded from one origin and calling errmap servers on
// another: what the page renders is what a front-end can read through CORS.
//
// ERRMAP_BIN: the errmap binary (default ../../target/debug/errmap);
// CHROMIUM: the browser (default /usr/bin/chromium). Run `npm run build`
// first.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { errmap, launchChromium, stopAll } from './support.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(HERE, '../dist');

let site;
let siteOrigin;
let browser;

/** A static server for dist/, on its own port: the page's origin. */
function serveDist() {
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript' };
  const server = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html';
    const file = path.join(DIST, path.basename(name));
    fs.readFile(file, (error, data) => {
      if (error) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Opens the page against `server`, looks `key` up, and returns what it rendered. */
async function lookUp(server, key, { token = '', lang = 'en-US', transport = 'grpc-web' } = {}) {
  const page = await browser.newPage();
  try {
    const url = `${siteOrigin}/index.html?server=${encodeURIComponent(server)}&lang=${encodeURIComponent(lang)}`;
    await page.goto(url, { waitUntil: 'load', timeout: 30000 });
    await page.waitForFunction(() => document.getElementById('state').textContent === 'ready', { timeout: 30000 });
    await page.click(`#transport-${transport}`);
    await page.type('#key', key);
    if (token) await page.type('#token', token);
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('state').textContent === 'done', { timeout: 30000 });
    return await page.evaluate(() => {
      const text = (id) => document.getElementById(id).textContent;
      const shown = (id) => !document.getElementById(id).hidden;
      return {
        found: shown('found'),
        failed: shown('failure'),
        name: text('name'),
        reason: text('reason'),
        code: text('code'),
        message: text('message'),
        action: shown('action') ? text('action') : '',
      };
    });
  } finally {
    await page.close();
  }
}

function jwt(secret, claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const signature = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${signature}`;
}

before(async () => {
  assert.ok(fs.existsSync(path.join(DIST, 'app.js')), 'run `npm run build` first');
  site = await serveDist();
  siteOrigin = `http://127.0.0.1:${site.address().port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  site?.close();
  stopAll();
});

test('a page of an allowed origin reads the code of a miss and the name of a hit', async () => {
  const server = await errmap('--cors-allow-origin', siteOrigin);

  const miss = await lookUp(server, '48');
  assert.equal(miss.failed, true);
  assert.equal(miss.reason, 'API_ITEM_NOT_FOUND');
  assert.equal(miss.code, '47');
  assert.equal(miss.message, 'The requested item was not found.');

  const hit = await lookUp(server, '11');
  assert.equal(hit.found, true);
  assert.equal(hit.name, 'AUTH_EXPIRED_TOKEN');

  // The page asks for Russian: the LocalizedMessage is Russian, the code the same.
  const russian = await lookUp(server, 'NO_SUCH_NAME', { lang: 'ru-RU,ru;q=0.9' });
  assert.equal(russian.reason, 'API_ITEM_NOT_FOUND');
  assert.equal(russian.code, '47');
  assert.match(russian.message, /[а-яё]/i);
});

test('a page of an origin that is not allowed cannot read the answer', async () => {
  const server = await errmap('--cors-allow-origin', 'http://127.0.0.1:1');
  const seen = await lookUp(server, '48');
  assert.equal(seen.failed, true);
  assert.equal(seen.reason, '', 'no details reach the page');
  assert.match(seen.action, /^Not a catalog error/);

  const closed = await errmap();
  const none = await lookUp(closed, '48');
  assert.equal(none.reason, '', 'without --cors-allow-origin, no origin is allowed');
});

test('the page branches on the auth codes of a protected server', async () => {
  const secret = crypto.randomBytes(32).toString('hex');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'errmap-web-')), 'secret.key');
  fs.writeFileSync(file, secret);
  const server = await errmap(
    '--cors-allow-origin', siteOrigin,
    '--auth-jwt-secret-file', file,
    '--auth-audience', 'errmap',
  );
  const now = Math.floor(Date.now() / 1000);

  const anonymous = await lookUp(server, '11');
  assert.equal(anonymous.reason, 'AUTH_REQUIRED');
  assert.equal(anonymous.code, '21');
  assert.match(anonymous.action, /^Sign in/);

  const expired = await lookUp(server, '11', { token: jwt(secret, { sub: 'web', aud: 'errmap', exp: now - 120 }) });
  assert.equal(expired.reason, 'AUTH_EXPIRED_TOKEN');
  assert.equal(expired.code, '11');
  assert.match(expired.action, /expired/);

  const good = await lookUp(server, '21', { token: jwt(secret, { sub: 'web', aud: 'errmap', exp: now + 600 }) });
  assert.equal(good.found, true);
  assert.equal(good.name, 'AUTH_REQUIRED');
});

test('the Connect toggle reads the same miss and hit, over JSON and GET', async () => {
  const server = await errmap('--cors-allow-origin', siteOrigin);

  const miss = await lookUp(server, '48', { transport: 'connect' });
  assert.equal(miss.failed, true);
  assert.equal(miss.reason, 'API_ITEM_NOT_FOUND');
  assert.equal(miss.code, '47');
  assert.equal(miss.message, 'The requested item was not found.');

  const hit = await lookUp(server, '11', { transport: 'connect' });
  assert.equal(hit.found, true);
  assert.equal(hit.name, 'AUTH_EXPIRED_TOKEN');

  const russian = await lookUp(server, 'NO_SUCH_NAME', { lang: 'ru-RU,ru;q=0.9', transport: 'connect' });
  assert.equal(russian.reason, 'API_ITEM_NOT_FOUND');
  assert.match(russian.message, /[а-яё]/i);

  // Without CORS for the page's origin, Connect's answer is as unreadable as gRPC-Web's.
  const closed = await errmap();
  const none = await lookUp(closed, '48', { transport: 'connect' });
  assert.equal(none.reason, '');
});
