import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execPlugin } from '../../src/adapters/cni/exec-plugin.js';
import { ensureShim } from '../../src/adapters/cni/shim-build.js';

/**
 * The weft-cni executable (C forwarder) against a fake agent on a unix socket in a temp dir: what it sends,
 * what it prints, and the errors it answers itself. No root; needs a C compiler to build the shim.
 */

let shim = '';
let skip: string | false = false;
try {
  shim = ensureShim();
} catch (err) {
  skip = (err as Error).message;
}

describe('weft-cni shim', { skip }, () => {
  let dir: string;
  let sock: string;
  let server: http.Server;
  const seen: Array<{ method?: string; url?: string; body: any }> = [];
  let reply: (body: any) => { status: number; body: string } = () => ({ status: 200, body: '{"exit":0,"out":null}' });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-cni-shim-'));
    sock = path.join(dir, 'agent.sock');
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        seen.push({ method: req.method, url: req.url, body });
        const r = reply(body);
        res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body) });
        res.end(r.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('forwards exactly the CNI_* variables that are set and stdin as it came; prints out and exits with exit', async () => {
    const config = { cniVersion: '1.0.0', name: 'n', agentSocket: sock, odd: 'quote " backslash \\ newline \n tab \t ctl \u0001 ünïcødé', nested: { agentSocket: '/elsewhere' } };
    const stdin = JSON.stringify(config, null, 2);
    const result = { cniVersion: '1.0.0', ips: [{ address: '10.1.2.3/24' }] };
    reply = () => ({ status: 200, body: JSON.stringify({ exit: 0, out: result }) });
    seen.length = 0;
    const r = await execPlugin(shim, { command: 'ADD', containerId: 'c1', netns: '/run/netns/x', ifname: 'eth0', args: 'IP=10.1.2.3;K=a"b', config: stdin });
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json, result);
    assert.equal(seen.length, 1);
    assert.deepEqual({ m: seen[0]!.method, u: seen[0]!.url }, { m: 'POST', u: '/cni' });
    assert.deepEqual(seen[0]!.body.env, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'IP=10.1.2.3;K=a"b', CNI_PATH: '/usr/lib/cni' });
    assert.equal(seen[0]!.body.stdin, stdin, 'stdin arrives byte for byte');
  });

  test('an error answer is printed as it is with exit 1; out null prints nothing', async () => {
    const err = { cniVersion: '1.1.0', code: 7, msg: 'bad' };
    reply = () => ({ status: 200, body: JSON.stringify({ exit: 1, out: err }) });
    const r = await execPlugin(shim, { command: 'DEL', containerId: 'c', ifname: 'eth0', config: { cniVersion: '1.1.0', name: 'n', agentSocket: sock } });
    assert.deepEqual({ code: r.code, json: r.json }, { code: 1, json: err });
    reply = () => ({ status: 200, body: '{"exit":0,"out":null}' });
    const ok = await execPlugin(shim, { command: 'DEL', containerId: 'c', ifname: 'eth0', config: { cniVersion: '1.1.0', name: 'n', agentSocket: sock } });
    assert.deepEqual({ code: ok.code, stdout: ok.stdout }, { code: 0, stdout: '' });
  });

  test('an agent without the CNI API (404) or with an answer of another shape: code 100 with the status', async () => {
    reply = () => ({ status: 404, body: '{"error":"no such API: POST /cni"}' });
    const r = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', name: 'n', agentSocket: sock } });
    assert.equal(r.code, 1);
    assert.equal(r.json.code, 100);
    assert.match(r.json.msg, /HTTP 404/);
    reply = () => ({ status: 200, body: '{"something":"else"}' });
    const odd = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', name: 'n', agentSocket: sock } });
    assert.equal(odd.json.code, 100);
  });

  test('agent unreachable: 11 for ADD/DEL/CHECK/GC, 50 for STATUS, in the config version', async () => {
    const gone = path.join(dir, 'nobody.sock');
    for (const command of ['ADD', 'DEL', 'CHECK', 'GC']) {
      const r = await execPlugin(shim, { command, containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '0.4.0', name: 'n', agentSocket: gone } });
      assert.deepEqual({ exit: r.code, code: r.json?.code, v: r.json?.cniVersion }, { exit: 1, code: 11, v: '0.4.0' }, command);
      assert.match(r.json.msg, /not reachable/);
    }
    const st = await execPlugin(shim, { command: 'STATUS', config: { cniVersion: '1.1.0', name: 'n', agentSocket: gone } });
    assert.deepEqual({ exit: st.code, code: st.json?.code }, { exit: 1, code: 50 });
    // a socket that accepts and hangs up without answering
    const rude = net.createServer((s) => s.destroy());
    const rudeSock = path.join(dir, 'rude.sock');
    await new Promise<void>((resolve) => rude.listen(rudeSock, resolve));
    try {
      const r = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', name: 'n', agentSocket: rudeSock } });
      assert.equal(r.json?.code, 11, r.stdout);
    } finally {
      rude.close();
    }
  });

  test('VERSION needs no agent; undecodable stdin is 6, oversized 5, too long agentSocket 7, all without the agent', async () => {
    seen.length = 0;
    const v = await execPlugin(shim, { command: 'VERSION', config: 'not even json' });
    assert.deepEqual({ code: v.code, json: v.json }, { code: 0, json: { cniVersion: '1.1.0', supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] } });
    for (const bad of ['{"cniVersion":"1.1.0",', '[]', '', '{"a":tru}', '{"a":01x}', '{"a":1.}', '{"a":"x"} trailing', '{"a":"\u0001"}', '{"a" 1}', '{"a":[1,]}']) {
      const r = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: bad });
      assert.deepEqual({ exit: r.code, code: r.json?.code }, { exit: 1, code: 6 }, JSON.stringify(bad));
    }
    const big = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', pad: 'x'.repeat(1 << 20) } });
    assert.equal(big.json?.code, 5);
    const long = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', agentSocket: `/tmp/${'s'.repeat(200)}` } });
    assert.equal(long.json?.code, 7);
    const relative = await execPlugin(shim, { command: 'ADD', containerId: 'c', netns: '/n', ifname: 'eth0', config: { cniVersion: '1.1.0', agentSocket: 'weft.sock' } });
    assert.equal(relative.json?.code, 7);
    assert.match(relative.json?.msg, /absolute/);
    assert.equal(seen.length, 0, 'none of these reached the agent');
  });
});
