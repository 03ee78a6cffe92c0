/**
 * The Docker plugin socket treats its bodies like the agent's API: a size limit (413 unread) and a zod
 * schema per call, answered `{"Err": "weft: invalid <call> request: <field>: …"}` with 400 — never a
 * TypeError, and never a call into weft with a malformed body. No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { DockerPlugin, type DockerBackendOps } from '../../src/adapters/docker/plugin.js';
import { FileStateStore } from '../../src/adapters/docker/state.js';

function post(socketPath: string, urlPath: string, raw: string, headers: Record<string, string> = {}): Promise<{ status: number; json: { Err?: string } }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: urlPath, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString() || '{}') }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => (['EPIPE', 'ECONNRESET'].includes(err.code ?? '') ? undefined : reject(err)));
    req.end(raw);
  });
}

test('malformed plugin bodies get 400 naming the field; oversized ones 413; the plugin keeps serving', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-plugin-'));
  const calls: string[] = [];
  const record = (name: string) => async () => {
    calls.push(name);
    throw new Error(`${name} must not be called with a malformed body`);
  };
  const ops: DockerBackendOps = {
    ensureNetwork: record('ensureNetwork'),
    joinNetwork: record('joinNetwork'),
    allocateAddress: record('allocateAddress'),
    releaseAddress: record('releaseAddress'),
    createVeth: record('createVeth'),
    deleteVeth: record('deleteVeth'),
    removeNetwork: record('removeNetwork'),
  };
  const plugin = new DockerPlugin({ ops, state: new FileStateStore(path.join(dir, 'state.json')), pluginDir: dir });
  const old = process.umask(0);
  try {
    await plugin.start();
    process.umask(old);
    assert.equal(fs.statSync(plugin.socketPath).mode & 0o777, 0o600, 'only dockerd (root) may call the plugin');
    const s = plugin.socketPath;
    const cases: Array<[string, string, RegExp]> = [
      ['/IpamDriver.ReleasePool', 'null', /^weft: invalid IpamDriver\.ReleasePool request: expected a JSON object, got null$/],
      ['/IpamDriver.ReleasePool', '{}', /^weft: invalid IpamDriver\.ReleasePool request: PoolID: required \(expected string\)$/],
      ['/IpamDriver.RequestPool', '{"Pool":5}', /^weft: invalid IpamDriver\.RequestPool request: Pool: expected string, got number$/],
      ['/IpamDriver.RequestPool', '{"Pool":"10.40.0.0/16","V6":"no"}', /V6: expected boolean, got string/],
      ['/IpamDriver.RequestPool', '{"Pool":"10.40.0.0/16","Options":[1]}', /Options: expected record, got array/],
      ['/IpamDriver.RequestAddress', '{"PoolID":{}}', /PoolID: expected string, got object/],
      ['/IpamDriver.ReleaseAddress', '{"PoolID":"p","Address":7}', /Address: expected string, got number/],
      ['/NetworkDriver.CreateNetwork', '{"NetworkID":"n","IPv4Data":[{"Pool":1}]}', /IPv4Data\.0\.Pool: expected string, got number/],
      ['/NetworkDriver.CreateNetwork', '{"NetworkID":"n","IPv4Data":"10.1.0.0/16"}', /IPv4Data: expected array, got string/],
      ['/NetworkDriver.CreateEndpoint', '{"NetworkID":"n","EndpointID":["e"]}', /EndpointID: expected string, got array/],
      ['/NetworkDriver.CreateEndpoint', '{"NetworkID":"n","EndpointID":"e","Interface":{"Address":5}}', /Interface\.Address: expected string, got number/],
      ['/NetworkDriver.Join', 'null', /Join request: expected a JSON object, got null/],
      ['/NetworkDriver.Leave', '[]', /Leave request: expected a JSON object, got array/],
      ['/NetworkDriver.DeleteNetwork', `{"NetworkID":"${'x'.repeat(2000)}"}`, /NetworkID: Too big|NetworkID: .*1024/],
    ];
    for (const [method, raw, want] of cases) {
      const a = await post(s, method, raw);
      assert.equal(a.status, 400, `${method} ${raw.slice(0, 60)} → ${a.status} ${JSON.stringify(a.json)}`);
      assert.match(a.json.Err ?? '', want, `${method} ${raw.slice(0, 60)}`);
    }
    const big = await post(s, '/IpamDriver.RequestPool', JSON.stringify({ Pool: '10.40.0.0/16', Options: { pad: 'x'.repeat(1024 * 1024) } }));
    assert.equal(big.status, 413);
    assert.match(big.json.Err!, /^weft: request body larger than 65536 bytes$/);
    assert.deepEqual(calls, [], 'no malformed body reached weft');
    const act = await post(s, '/Plugin.Activate', '');
    assert.equal(act.status, 200);
    // a well-formed call still works after all that
    const pool = await post(s, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'weft', Pool: '10.40.0.0/16', SubPool: '', Options: null, V6: false }));
    assert.equal(pool.status, 200, JSON.stringify(pool.json));
  } finally {
    process.umask(old);
    await plugin.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
