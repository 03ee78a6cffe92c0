/**
 * The CLI's client waits for a slow agent (it used to give up after Node's 5 s keep-alive socket timeout
 * while the agent carried on), and its own timeout says the request may still complete and how to check.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { callAgent } from '../../src/agent/client.js';
import { runWeft } from '../../src/testbed/agents.js';

async function slowServer(delayMs: number, fn: (sock: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-client-'));
  const sock = path.join(dir, 'slow.sock');
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    req.resume();
    const t = setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ address: '10.5.0.2/24', container: 'c1', network: 'n' }));
    }, delayMs);
    timers.add(t);
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    await fn(sock);
  } finally {
    for (const t of timers) clearTimeout(t);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('a call waits for an agent that takes longer than 5 s', async () => {
  await slowServer(6500, async (sock) => {
    const ep = await callAgent<{ address: string }>(sock, 'POST', '/attach', { container: 'c1' });
    assert.equal(ep.address, '10.5.0.2/24');
  });
});

test('weft attach --timeout: one clear line saying the agent may still finish, and how to check', async () => {
  await slowServer(3000, async (sock) => {
    const r = await runWeft(['attach', 'c1', '--api', sock, '--timeout', '0.5'], { timeoutMs: 15_000 });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^weft: the agent at ${sock.replace(/[.]/g, '\\.')} did not answer POST /attach within 0\\.5 s; it may still complete the request; check with 'weft ps --api .*' before retrying \\(wait longer with --timeout SECONDS\\)\\n$`));
    const bad = await runWeft(['attach', 'c1', '--api', sock, '--timeout', 'soon']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /expected a number of seconds > 0, got "soon"/);
  });
});
