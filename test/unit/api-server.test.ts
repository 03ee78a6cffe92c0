/**
 * The agent's API server without an agent: body limit (413 unread), zod validation of the attach/detach
 * bodies (400 naming the field), socket mode under umask 000, and refusing a socket another process serves.
 * No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { serveApi, removeStaleSocket, type Route } from '../../src/agent/api.js';
import { attachRequestSchema, detachRequestSchema, MAX_BODY_BYTES } from '../../src/agent/schemas.js';

const log = pino({ level: 'silent' });

interface Answer {
  status: number;
  body: { error?: string; [k: string]: unknown };
}

function post(socketPath: string, urlPath: string, raw: string | undefined, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: urlPath, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') }));
    });
    req.on('error', reject);
    if (raw !== undefined) req.write(raw);
    req.end();
  });
}

async function withServer(fn: (sock: string, seen: unknown[]) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-'));
  const sock = path.join(dir, 'api.sock');
  const seen: unknown[] = [];
  const routes: Route[] = [
    { method: 'POST', path: '/attach', body: attachRequestSchema, handler: (b) => (seen.push(b), { ok: true }) },
    { method: 'POST', path: '/detach', body: detachRequestSchema, handler: (b) => (seen.push(b), []) },
    { method: 'POST', path: '/reset', handler: () => ({ reset: true }) },
  ];
  const server = await serveApi(sock, routes, log);
  try {
    await fn(sock, seen);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('every malformed attach/detach body is a 400 naming the field, never a 500, and never reaches the handler', async () => {
  await withServer(async (sock, seen) => {
    const cases: Array<[string, string, RegExp]> = [
      ['/attach', 'null', /expected a JSON object, got null/],
      ['/attach', '{}', /container: required \(expected string\)/],
      ['/attach', '[]', /expected a JSON object, got array/],
      ['/attach', '"c1"', /expected a JSON object, got string/],
      ['/attach', '{"container":5}', /container: expected string, got number/],
      ['/attach', '{"container":["a"]}', /container: expected string, got array/],
      ['/attach', '{"container":{"a":1}}', /container: expected string, got object/],
      ['/attach', '{"container":""}', /container: must not be empty/],
      ['/attach', '{"container":"c1","ifname":5}', /ifname: expected string, got number/],
      ['/attach', '{"container":"c1","ifname":"eth0\\nlink del weft0"}', /ifname: not an interface name/],
      ['/attach', '{"container":"c1","ifname":"abcdefghijklmnop"}', /ifname: not an interface name/],
      ['/attach', '{"container":"c1","ifname":"-x"}', /ifname: not an interface name/],
      ['/attach', JSON.stringify({ container: 'c1', name: 'a'.repeat(1000) }), /name: not a DNS name: longer than 200/],
      ['/attach', JSON.stringify({ container: 'c1', name: `${'a'.repeat(64)}.example` }), /name: not a DNS name: label .* longer than 63/],
      ['/attach', '{"container":"c1","name":"web!1"}', /name: not a DNS name: label "web!1"/],
      ['/attach', '{"container":"c1","address":"10.5.0.300"}', /address: not an IPv4 address/],
      ['/attach', '{"container":"c1","network":"a/b"}', /network: not a network name/],
      ['/attach', '{"container":"c1","netwrok":"blue"}', /unknown field "netwrok"/],
      ['/attach', '{"container":', /not JSON/],
      ['/detach', '{"container":7}', /container: expected string, got number/],
      ['/detach', 'null', /expected a JSON object, got null/],
      ['/reset', '{"everything":true}', /reset request: expected no body or \{\}|unknown field/],
    ];
    for (const [route, raw, want] of cases) {
      const a = await post(sock, route, raw, { 'content-type': 'application/json' });
      assert.equal(a.status, 400, `${route} ${raw.slice(0, 60)} → ${a.status} ${JSON.stringify(a.body)}`);
      assert.match(a.body.error ?? '', want, `${route} ${raw.slice(0, 60)}`);
      assert.ok(!a.body.error!.includes('\n'), 'one line');
    }
    assert.deepEqual(seen, [], 'no malformed body reached a handler');
    // good bodies pass, parsed
    const good = await post(sock, '/attach', JSON.stringify({ container: 'c1', ifname: 'ethwe1', name: 'web-1.example.com', address: '10.5.0.9/24', network: 'blue' }));
    assert.equal(good.status, 200);
    assert.equal((await post(sock, '/reset', undefined)).status, 200);
    assert.equal((await post(sock, '/reset', '{}')).status, 200);
    assert.deepEqual(seen, [{ container: 'c1', ifname: 'ethwe1', name: 'web-1.example.com', address: '10.5.0.9/24', network: 'blue' }]);
  });
});

test('a body over 64 KB is refused with 413 before it is read, and the server keeps serving', async () => {
  await withServer(async (sock) => {
    // declared size over the limit: answered at once, although only a little of the body is ever sent
    const declared = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        { socketPath: sock, method: 'POST', path: '/attach', agent: false, headers: { 'content-type': 'application/json', 'content-length': String(600 * 1024 * 1024) } },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
          req.destroy();
        },
      );
      req.on('error', (err) => (err.message.includes('socket hang up') || (err as NodeJS.ErrnoException).code === 'EPIPE' ? undefined : reject(err)));
      req.write('{"container":"' + 'x'.repeat(1024));
    });
    assert.equal(declared, 413);

    // streamed (chunked, no length) over the limit
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = http.request({ socketPath: sock, method: 'POST', path: '/attach', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', (err) => (['EPIPE', 'ECONNRESET'].includes((err as NodeJS.ErrnoException).code ?? '') ? undefined : reject(err)));
      const chunk = 'y'.repeat(16 * 1024);
      for (let i = 0; i < 8; i++) req.write(chunk);
      req.end();
    });
    assert.equal(streamed, 413);

    // just under the limit is read (and then judged by the schema)
    const under = await post(sock, '/attach', JSON.stringify({ container: 'c', pad: 'z'.repeat(MAX_BODY_BYTES - 100) }));
    assert.equal(under.status, 400);
    assert.match(under.body.error!, /unknown field "pad"/);
    assert.equal((await post(sock, '/attach', '{"container":"c1"}')).status, 200);
  });
});

test('the API socket is 0660 even under umask 000', async () => {
  const old = process.umask(0);
  try {
    await withServer(async (sock) => {
      assert.equal(fs.statSync(sock).mode & 0o777, 0o660);
    });
  } finally {
    process.umask(old);
  }
});

test('a socket another process answers on is refused; a dead one is replaced; a non-socket is left alone', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-'));
  try {
    const sock = path.join(dir, 'live.sock');
    const other = net.createServer((c) => c.end());
    await new Promise<void>((r) => other.listen(sock, r));
    await assert.rejects(serveApi(sock, [], log), /another process \(a weft agent\?\) listens on .*live\.sock/);
    assert.ok(fs.existsSync(sock), 'the live socket was not unlinked');
    await new Promise((r) => other.close(r));

    // a socket file nobody listens on (its process killed with -9) is taken over
    const dead = path.join(dir, 'dead.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(dead)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    assert.ok(fs.existsSync(dead), 'kill -9 leaves the socket file');
    await removeStaleSocket(dead);
    assert.ok(!fs.existsSync(dead));

    const file = path.join(dir, 'notes.txt');
    fs.writeFileSync(file, 'keep me');
    await assert.rejects(removeStaleSocket(file), /exists and is not a socket/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'keep me');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--api-group: the socket gets that group, still 0660', { skip: process.getuid?.() === 0 ? false : 'chown to another group needs root' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-'));
  const sock = path.join(dir, 'api.sock');
  const server = await serveApi(sock, [], log, { gid: 65534 });
  try {
    const st = fs.statSync(sock);
    assert.equal(st.gid, 65534);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o660);
  } finally {
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a kernel failure in a handler is the host's problem: 500, logged with the command; a user error is 400", async () => {
  const { ExecError } = await import('../../src/system/exec.js');
  const { WeftError } = await import('../../src/util/errors.js');
  const logged: Array<Record<string, unknown>> = [];
  const recording = pino({ level: 'error' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-'));
  const sock = path.join(dir, 'api.sock');
  const routes: Route[] = [
    { method: 'POST', path: '/kernel', handler: () => { throw new ExecError('ip', ['link', 'add', 'x'], 2, 'RTNETLINK answers: Operation not permitted'); } },
    { method: 'POST', path: '/user', handler: () => { throw new WeftError('no such container'); } },
  ];
  const server = await serveApi(sock, routes, recording);
  try {
    const k = await post(sock, '/kernel', undefined);
    assert.equal(k.status, 500);
    assert.match(k.body.error!, /ip link add x failed \(exit 2\): RTNETLINK answers: Operation not permitted/);
    assert.ok(logged.some((l) => JSON.stringify(l).includes('ip link add x')), 'the failing command is logged');
    const u = await post(sock, '/user', undefined);
    assert.equal(u.status, 400);
    assert.equal(u.body.error, 'no such container');
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
