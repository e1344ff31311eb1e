// errmap from Node, with the stock tooling: @grpc/grpc-js and
// @grpc/proto-loader for the calls; the errors read with the helpers that
// protoc-gen-errmap generates (typed/gen, `npm run typed`), and checked
// against the proto's options as protobufjs reads them, with the google.rpc
// protos from google-proto-files. The server is the real `errmap serve`
// binary (ERRMAP_BIN) on 127.0.0.1:0.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import crypto from 'node:crypto';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

import * as errmapErrors from './typed/build/gen/errmap/v1/error_code_errmap.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../../..');
const BIN = process.env.ERRMAP_BIN ?? path.join(ROOT, 'target/debug/errmap');
const INCLUDE = [path.join(ROOT, 'proto'), path.join(HERE, 'node_modules/google-proto-files')];
const NODE_MODULES = path.join(HERE, 'node_modules');

const options = { keepCase: true, longs: Number, defaults: true, oneofs: true, includeDirs: INCLUDE };
const catalogDef = protoLoader.loadSync('errmap/v1/catalog.proto', options);
const ErrorCatalog = grpc.loadPackageDefinition(catalogDef).errmap.v1.ErrorCatalog;
const healthDef = protoLoader.loadSync(
  path.join(NODE_MODULES, 'grpc-health-check/proto/health/v1/health.proto'),
  options,
);
const Health = grpc.loadPackageDefinition(healthDef).grpc.health.v1.Health;
const SERVING = healthDef['grpc.health.v1.HealthCheckResponse'].type.enumType[0].value.find(
  (v) => v.name === 'SERVING',
).number;
const reflectionDef = protoLoader.loadSync(
  path.join(NODE_MODULES, '@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'),
  options,
);
const Reflection = grpc.loadPackageDefinition(reflectionDef).grpc.reflection.v1.ServerReflection;

// The catalog as the proto's own custom options say, and the google.rpc types.
const root = new protobuf.Root();
root.resolvePath = (origin, target) => {
  for (const dir of INCLUDE) {
    const candidate = path.resolve(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return protobuf.util.path.resolve(origin, target);
};
root.loadSync(
  ['errmap/v1/error_code.proto', 'google/rpc/status.proto', 'google/rpc/error_details.proto'],
  { keepCase: true },
);
const ErrorCodeEnum = root.lookupEnum('errmap.v1.ErrorCode');
const DOMAIN = ErrorCodeEnum.options['(errmap.v1.domain)'];
const RpcStatus = root.lookupType('google.rpc.Status');
const spec = (name) => {
  const o = ErrorCodeEnum.valuesOptions[name];
  return {
    number: ErrorCodeEnum.values[name],
    grpcCode: o['(errmap.v1.error).grpc_code'],
    http: o['(errmap.v1.error).http_status'],
    category: o['(errmap.v1.error).category'],
    message: o['(errmap.v1.error).message'],
    retrySeconds: o['(errmap.v1.error).retry_delay.seconds'],
    // protobufjs flattens option maps into one key and one value: with one
    // translation (ru-RU), that is the whole map.
    messages: { [o['(errmap.v1.error).messages.key']]: o['(errmap.v1.error).messages.value'] },
  };
};

class Server {
  static async start(...args) {
    const s = new Server();
    s.proc = spawn(BIN, ['serve', '--addr', '127.0.0.1:0', ...args], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    s.addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('errmap serve printed no address')), 30000);
      createInterface({ input: s.proc.stdout }).once('line', (line) => {
        clearTimeout(timer);
        resolve(line.trim());
      });
    });
    s.catalog = new ErrorCatalog(s.addr, grpc.credentials.createInsecure());
    return s;
  }

  async stop() {
    const exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.proc.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no exit in 20 s')), 20000)),
    ]);
    this.catalog.close();
    return code;
  }
}

const unary = (client, method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    ),
  );

const failure = async (promise) => {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the call succeeded');
};

/** The catalog function name of a reason: API_ITEM_NOT_FOUND is isApiItemNotFound. */
const isName = (reason) =>
  'is' + reason.toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c) => c.toUpperCase());

/**
 * Checks the error against docs/design.md §2 with the helpers protoc-gen-errmap
 * generated (typed/gen, compiled by `npm run typed`): `entryOf` and the
 * code's `is<Name>`, which read grpc-status-details-bin from a grpc-js
 * ServiceError. The entry's facts are compared with the proto's own options,
 * read by protobufjs: that is the check of the helpers themselves.
 */
function assertCatalogError(error, name, locale = 'en-US') {
  const s = spec(name);
  assert.equal(error.code, grpc.status[s.grpcCode], `${name}: ${error.message}`);
  const entry = errmapErrors.entryOf(error);
  assert.ok(entry, `${name}: not a catalog error: ${error.message}`);
  assert.equal(errmapErrors[isName(name)](error), true, `${isName(name)}`);
  assert.equal(entry.reason, name);
  assert.equal(entry.domain, DOMAIN);
  assert.equal(entry.code, s.number);
  assert.equal(entry.grpcCode, grpc.status[s.grpcCode]);
  assert.equal(entry.httpStatus, s.http);
  assert.equal(entry.category, s.category);
  assert.equal(entry.message, s.message);
  assert.equal(entry.locale, locale);
  assert.equal(entry.localizedMessage, locale === 'en-US' ? s.message : s.messages[locale]);
  assert.equal(entry.retryDelay, s.retrySeconds);
  return entry;
}

/** The BadRequest of an error, which the typed helpers leave to the caller. */
function badRequest(error) {
  const [raw] = error.metadata.get('grpc-status-details-bin');
  for (const any of RpcStatus.decode(raw).details) {
    if (any.type_url.endsWith('/google.rpc.BadRequest')) {
      return root.lookupType('google.rpc.BadRequest').decode(any.value);
    }
  }
  assert.fail('no BadRequest');
}

test('every code, by number and by name, matches the proto options', async () => {
  const server = await Server.start();
  try {
    const names = Object.keys(ErrorCodeEnum.values);
    assert.equal(names.length, 27);
    for (const name of names) {
      const s = spec(name);
      for (const request of [{ code: s.number }, { name }]) {
        const { error: d } = await unary(server.catalog, 'GetError', request);
        assert.equal(d._code, 'code', 'explicit presence, code 0 included');
        assert.equal(d.code, s.number);
        assert.equal(d.name, name);
        assert.equal(d.message, s.message);
        assert.equal(d.category, s.category);
        assert.equal(d.grpc_code_name, s.grpcCode);
        assert.equal(d.grpc_code, grpc.status[s.grpcCode]);
        assert.equal(d.http_status, s.http);
        assert.equal(d.domain, DOMAIN);
        assert.equal(d.retry_delay ? Number(d.retry_delay.seconds) : undefined, s.retrySeconds);
      }
    }
    const all = await unary(server.catalog, 'ListErrors', {});
    assert.deepEqual(
      all.errors.map((d) => d.code),
      Object.values(ErrorCodeEnum.values).sort((a, b) => a - b),
    );
    const tokens = await unary(server.catalog, 'ListErrors', { category: 'auth_token' });
    assert.deepEqual(tokens.errors.map((d) => d.name), ['AUTH_INVALID_TOKEN', 'AUTH_EXPIRED_TOKEN']);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('lookup errors carry their catalog details', async () => {
  const server = await Server.start();
  try {
    let error = await failure(unary(server.catalog, 'GetError', { code: 48 }));
    const entry = assertCatalogError(error, 'API_ITEM_NOT_FOUND');
    assert.deepEqual(entry.params, { requestedCode: '48' });

    error = await failure(unary(server.catalog, 'GetError', {}));
    assertCatalogError(error, 'API_INVALID_REQUEST');
    assert.deepEqual(badRequest(error).field_violations.map((v) => v.field), ['key']);

    error = await failure(unary(server.catalog, 'ListErrors', { category: 'nope' }));
    assertCatalogError(error, 'API_INVALID_REQUEST');
    assert.equal(badRequest(error).field_violations[0].field, 'category');
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('a Russian-speaking client reads ru-RU details and lookups', async () => {
  const server = await Server.start();
  const russian = (value) => {
    const metadata = new grpc.Metadata();
    metadata.set('accept-language', value);
    return metadata;
  };
  try {
    for (const value of ['ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7', 'fr-CH, ru;q=0.5', 'ru']) {
      const error = await failure(unary(server.catalog, 'GetError', { code: 48 }, russian(value)));
      assertCatalogError(error, 'API_ITEM_NOT_FOUND', 'ru-RU');
      // grpc-message stays the English developer message.
      assert.match(error.details, /^[\x20-\x7e]*$/);
    }
    const error = await failure(unary(server.catalog, 'GetError', {}, russian('de-DE')));
    assertCatalogError(error, 'API_INVALID_REQUEST', 'en-US');

    const { errors } = await unary(server.catalog, 'ListErrors', {}, russian('ru'));
    assert.equal(errors.length, 27);
    for (const d of errors) {
      const s = spec(d.name);
      assert.equal(d.locale, 'ru-RU');
      assert.equal(d.localized_message, s.messages['ru-RU']);
      assert.equal(d.message, s.message);
    }
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('health and reflection answer', async () => {
  const server = await Server.start();
  try {
    const health = new Health(server.addr, grpc.credentials.createInsecure());
    for (const service of ['', 'errmap.v1.ErrorCatalog']) {
      const reply = await unary(health, 'Check', { service });
      assert.equal(reply.status, SERVING);
    }
    health.close();

    const reflection = new Reflection(server.addr, grpc.credentials.createInsecure());
    const call = reflection.ServerReflectionInfo();
    const reply = new Promise((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    call.write({ list_services: '' });
    const services = (await reply).list_services_response.service.map((s) => s.name);
    call.end();
    reflection.close();
    for (const name of ['errmap.v1.ErrorCatalog', 'grpc.health.v1.Health']) {
      assert.ok(services.includes(name), `${name} in ${services}`);
    }
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

function jwt(secret, claims) {
  const b64 = (b) => Buffer.from(b).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

test('a protected server answers 21, 10 and 11', async () => {
  const secret = 'node interop secret, long enough';
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'errmap-node-')), 'secret');
  fs.writeFileSync(file, `${secret}\n`);
  const server = await Server.start('--auth-jwt-secret-file', file, '--auth-audience', 'errmap');
  try {
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      [null, 'AUTH_REQUIRED'],
      ['Bearer garbage', 'AUTH_INVALID_TOKEN'],
      [`Bearer ${jwt('another secret', { exp: now + 60, aud: 'errmap' })}`, 'AUTH_INVALID_TOKEN'],
      [`Bearer ${jwt(secret, { exp: now - 120, aud: 'errmap' })}`, 'AUTH_EXPIRED_TOKEN'],
      [`Bearer ${jwt(secret, { exp: now + 60, aud: 'someone-else' })}`, 'AUTH_INVALID_TOKEN'],
    ];
    for (const [authorization, name] of cases) {
      const metadata = new grpc.Metadata();
      if (authorization) metadata.set('authorization', authorization);
      const error = await failure(unary(server.catalog, 'GetError', { code: 21 }, metadata));
      assertCatalogError(error, name);
    }
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${jwt(secret, { sub: 'node', exp: now + 60, aud: 'errmap' })}`);
    const ok = await unary(server.catalog, 'GetError', { code: 21 }, metadata);
    assert.equal(ok.error.name, 'AUTH_REQUIRED');
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('load shedding is 44 with RetryInfo', async () => {
  // Long-lived streams have places of their own; with one, the second
  // health Watch is shed at once.
  const server = await Server.start('--stream-limit', '1');
  const health = new Health(server.addr, grpc.credentials.createInsecure());
  const watch = () => {
    const call = health.Watch({ service: '' });
    const first = new Promise((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    return { call, first };
  };
  try {
    const held = watch();
    assert.equal((await held.first).status, SERVING);
    const second = watch();
    const shed = await second.first.then(
      () => null,
      (error) => error,
    );
    assert.ok(shed, 'the second Watch was shed');
    assertCatalogError(shed, 'API_TOO_MANY_REQUESTS');
    assert.ok(
      RpcStatus.decode(shed.metadata.get('grpc-status-details-bin')[0]).details.some((d) =>
        d.type_url.endsWith('/google.rpc.RetryInfo'),
      ),
      'RetryInfo sent',
    );
    // Unary calls have their own places.
    await unary(server.catalog, 'GetError', { code: 1 });
    held.call.on('error', () => {});
    held.call.cancel();
  } finally {
    health.close();
    assert.equal(await server.stop(), 0);
  }
});

/** The fenced block of README.md after its `<!-- readme-snippet: NAME ... -->` marker. */
const readmeSnippet = (name) => {
  const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const at = text.indexOf(`<!-- readme-snippet: ${name} `);
  assert.ok(at >= 0, `README.md has no snippet ${name}`);
  const lines = text.slice(at).split('\n').slice(1);
  assert.ok(lines[0].startsWith('```'), `${name}: no fenced block after the marker`);
  const end = lines.findIndex((line, i) => i > 0 && line.startsWith('```'));
  assert.ok(end > 0, `${name}: the block is not closed`);
  return lines.slice(1, end).join('\n') + '\n';
};

test("the README's Node snippet runs as written", async () => {
  // A user's folder: a copy of proto/ and the packages the README names
  // (this test's node_modules), with the snippet as miss.mjs.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'errmap-readme-node-'));
  fs.cpSync(path.join(ROOT, 'proto'), path.join(work, 'proto'), { recursive: true });
  fs.symlinkSync(NODE_MODULES, path.join(work, 'node_modules'));
  fs.writeFileSync(path.join(work, 'miss.mjs'), readmeSnippet('node-miss'));
  const s = await Server.start();
  try {
    const child = spawn(process.execPath, ['miss.mjs'], {
      cwd: work,
      env: { ...process.env, ERRMAP_ADDR: s.addr },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await Promise.race([
      new Promise((resolve) => child.once('exit', resolve)),
      new Promise((_, reject) => setTimeout(() => reject(new Error('no exit in 30 s')), 30000)),
    ]);
    assert.equal(code, 0, err);
    assert.equal(
      out,
      `API_ITEM_NOT_FOUND (${DOMAIN}), code 47\n[en-US] The requested item was not found.\n`,
      err,
    );
  } finally {
    assert.equal(await s.stop(), 0);
  }
});
