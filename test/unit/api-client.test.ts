/**
 * The CLI's client waits for a slow agent (it used to give up after Node's 5 s keep-alive socket timeout
 * while the agent carried on), and its own timeout says the request may still complete and how to check.
 * The real > 5 s wait runs in the e2e tier (test/api-client-wait.test.ts); here the cause is checked
 * directly: no socket the client uses carries an idle timeout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import type net from 'node:net';
import { callAgent, parseResponse } from '../../src/agent/client.js';
import { weftInProcess } from '../helpers/cli.js';
import { slowServer } from '../helpers/slow-server.js';

test('a call puts no idle timeout on its socket (Node 20\'s global agent would give up on a busy agent after 5 s)', async () => {
  const sockets: net.Socket[] = [];
  const onSocket = (m: unknown) => sockets.push((m as { socket: net.Socket }).socket);
  diagnostics.subscribe('net.client.socket', onSocket);
  try {
    await slowServer(20, async (sock) => {
      const ep = await callAgent<{ address: string }>(sock, 'POST', '/attach', { container: 'c1' });
      assert.equal(ep.address, '10.5.0.2/24');
      const r = await weftInProcess(['attach', 'c1', '--api', sock]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '10.5.0.2/24\n');
    });
  } finally {
    diagnostics.unsubscribe('net.client.socket', onSocket);
  }
  assert.ok(sockets.length >= 2, `both calls were seen (${sockets.length} sockets)`);
  for (const s of sockets) assert.equal((s as net.Socket & { timeout?: number }).timeout, undefined, 'an idle timeout would cut off a slow agent');
});

test('weft attach --timeout: one clear line saying the agent may still finish, and how to check', async () => {
  await slowServer(60_000, async (sock) => {
    const r = await weftInProcess(['attach', 'c1', '--api', sock, '--timeout', '0.2']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^weft: the agent at ${sock.replace(/[.]/g, '\\.')} did not answer POST /attach within 0\\.2 s; it may still complete the request; check with 'weft ps --api .*' before retrying \\(wait longer with --timeout SECONDS\\)\\n$`));
    const bad = await weftInProcess(['attach', 'c1', '--api', sock, '--timeout', 'soon']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /expected a number of seconds > 0, got "soon"/);
  });
});

test('parseResponse: status, content type and body; undefined while the answer is incomplete', () => {
  const ok = parseResponse(Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\ncontent-length: 16\r\n\r\n{"error":"bad x"}extra'));
  assert.deepEqual(ok, { status: 400, contentType: 'application/json', text: '{"error":"bad x"' });
  assert.deepEqual(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhé')), { status: 200, contentType: 'text/plain', text: 'hé' });
  assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort')), undefined);
  assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain')), undefined);
  assert.equal(parseResponse(Buffer.from('garbage\r\n\r\n')), undefined);
});
