// The catalog pages of `errmap serve` (issue 15) in Debian's Chromium:
// the DOM of `/` and of one code's page, the filter, the layout at 1280,
// 1024 and 375 px (issue 22), screenshots kept as test artifacts
// (target/test-artifacts/), and the HTML checked by html-validate.
//
// ERRMAP_BIN: the errmap binary (default ../../target/debug/errmap);
// CHROMIUM: the browser (default /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { HtmlValidate } from 'html-validate';

import { ROOT, errmap, launchChromium, stopAll } from './support.mjs';

const ARTIFACTS = path.join(ROOT, 'target/test-artifacts');

let server;
let browser;

before(async () => {
  server = await errmap();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

/** The catalog, from the server's own HTTP API. */
async function catalog() {
  const response = await fetch(`${server}/v1/errors`);
  assert.equal(response.status, 200);
  return (await response.json()).errors;
}

const rowNames = (page) =>
  page.$$eval('tbody tr', (rows) => rows.map((r) => r.id));

test('the index lists every code, filters, and fits a phone', async () => {
  const codes = await catalog();
  const page = await browser.newPage();
  await page.setViewport({ width: 375, height: 812, deviceScaleFactor: 1 });
  await page.goto(`${server}/`, { waitUntil: 'load' });
  assert.equal(await page.$eval('h1', (h) => h.textContent), 'Error codes');
  assert.deepEqual(await rowNames(page), codes.map((d) => d.name));
  // No horizontal scrolling of the page itself: the table scrolls in its box.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'catalog-phone.png'), fullPage: true });

  // The filter is a plain form: choose a category, submit.
  await page.select('#category', 'oauth');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  assert.match(page.url(), /category=oauth/);
  assert.deepEqual(
    await rowNames(page),
    codes.filter((d) => d.category === 'oauth').map((d) => d.name),
  );
  // A row links to the code's page.
  await Promise.all([page.waitForNavigation(), page.click('tbody tr th a')]);
  assert.match(page.url(), /\/errors\/OAUTH_/);
  await page.close();
});

test('one code page, in English and in Russian', async () => {
  const page = await browser.newPage();
  await page.setViewport({ width: 1024, height: 768 });
  await page.goto(`${server}/errors/API_TOO_MANY_REQUESTS`, { waitUntil: 'load' });
  assert.equal(await page.$eval('html', (h) => h.lang), 'en-US');
  assert.equal(await page.$eval('#code', (d) => d.textContent), '44');
  assert.match(await page.$eval('#advice', (p) => p.textContent), /Wait at least 1 s/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'error-page.png'), fullPage: true });
  // The language switch.
  await Promise.all([page.waitForNavigation(), page.click('nav a[hreflang="ru-RU"]')]);
  assert.equal(await page.$eval('html', (h) => h.lang), 'ru-RU');
  assert.match(await page.$eval('#message', (p) => p.textContent), /[а-яё]/i);
  await page.close();
  for (const name of ['catalog-phone.png', 'error-page.png']) {
    assert.ok(fs.statSync(path.join(ARTIFACTS, name)).size > 1000, `${name} saved`);
  }
});

test('the pages are valid HTML and small', async () => {
  const validator = new HtmlValidate({ extends: ['html-validate:recommended'] });
  for (const url of ['/', '/?category=auth_token&q=token', '/errors/AUTH_EXPIRED_TOKEN', '/errors/AUTH_EXPIRED_TOKEN?lang=ru-RU']) {
    const response = await fetch(`${server}${url}`);
    assert.equal(response.status, 200, url);
    const html = await response.text();
    assert.ok(Buffer.byteLength(html) < 50 * 1024, `${url}: ${Buffer.byteLength(html)} bytes`);
    const report = await validator.validateString(html);
    const problems = report.results.flatMap((r) => r.messages.map((m) => `${m.ruleId} ${m.line}:${m.column} ${m.message}`));
    assert.equal(report.valid, true, `${url}:\n${problems.join('\n')}`);
  }
});

/** What a reader cannot see at this width: cells cut by the table's box or
 * by the window, and the page's own horizontal overflow. */
const clipped = (page) =>
  page.evaluate(() => {
    const box = document.querySelector('.scroll');
    const limit = Math.min(box.getBoundingClientRect().right, window.innerWidth);
    const cut = [...document.querySelectorAll('tr > *')]
      .filter((cell) => cell.getBoundingClientRect().right > limit + 0.5)
      .map((cell) => `${cell.closest('tr').id || 'head'}: ${cell.textContent.slice(0, 30)}`);
    return {
      cut,
      boxOverflow: box.scrollWidth - box.clientWidth,
      pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    };
  });

test('the index fits 1280, 1024 and 375 px, with code shown as code', async () => {
  const codes = await catalog();
  for (const [width, height] of [[1280, 900], [1024, 768], [375, 812]]) {
    const page = await browser.newPage();
    await page.setViewport({ width, height, deviceScaleFactor: 1 });
    await page.goto(`${server}/`, { waitUntil: 'load' });
    const shown = await clipped(page);
    assert.deepEqual(shown.cut, [], `${width}px: cells cut`);
    assert.ok(shown.boxOverflow <= 0, `${width}px: the table scrolls by ${shown.boxOverflow}px`);
    assert.ok(shown.pageOverflow <= 0, `${width}px: the page is ${shown.pageOverflow}px too wide`);
    // One catalog: its domain is said once, not in a column.
    assert.equal(await page.$eval('#domain', (c) => c.textContent), codes[0].domain);
    assert.equal(await page.$$eval('thead th', (h) => h.some((c) => c.textContent === 'Domain')), false);
    // Backticks are code, never shown literally.
    const required = await page.$eval('#AUTH_REQUIRED td.message', (td) => ({
      text: td.textContent,
      code: [...td.querySelectorAll('code')].map((c) => c.textContent),
    }));
    assert.deepEqual(required.code, ['token', 'Authorization'], `${width}px`);
    assert.ok(!required.text.includes('`'), required.text);
    assert.equal(await page.$$eval('td.message', (cells) => cells.filter((c) => c.textContent.includes('`')).length), 0);
    // Every name is whole (breaks only at its underscores).
    assert.deepEqual(
      await page.$$eval('tbody th a', (links) => links.map((a) => a.textContent)),
      codes.map((d) => d.name),
    );
    const file = path.join(ARTIFACTS, `catalog-${width}.png`);
    await page.screenshot({ path: file, fullPage: width !== 375 });
    assert.ok(fs.statSync(file).size > 1000, `${file} saved`);
    await page.close();
  }
  // The page of one code shows its message's code as code too.
  const page = await browser.newPage();
  await page.goto(`${server}/errors/AUTH_REQUIRED`, { waitUntil: 'load' });
  assert.deepEqual(await page.$$eval('#message code', (c) => c.map((x) => x.textContent)), ['token', 'Authorization']);
  await page.close();
});
