import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ensureShim } from '../../src/adapters/cni/shim-build.js';
import { parseConfig } from '../../src/adapters/cni/spec.js';
import { weftInProcess as runWeft } from '../helpers/cli.js';

/** `weft install-cni` (in-process) into temp dirs (never /opt or /etc): the executable, its mode, the example conflist. */

let skip: string | false = false;
try {
  ensureShim();
} catch (err) {
  skip = (err as Error).message;
}

describe('weft install-cni', { skip }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-install-cni-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('copies the executable (0755) and writes a conflist (0644) the plugin accepts, chained with portmap', async () => {
    const bin = path.join(dir, 'bin');
    const netd = path.join(dir, 'net.d');
    const r = await runWeft(['install-cni', '--dir', bin, '--conf-dir', netd, '--network', 'blue', '--agent-socket', '/run/weft-test/api.sock', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { plugin: string; conflist: string };
    assert.equal(out.plugin, path.join(bin, 'weft-cni'));
    assert.equal(fs.statSync(out.plugin).mode & 0o777, 0o755);
    assert.ok(fs.readFileSync(out.plugin).equals(fs.readFileSync(ensureShim())), 'the built shim, byte for byte');
    assert.equal(fs.statSync(out.conflist).mode & 0o777, 0o644);
    const list = JSON.parse(fs.readFileSync(out.conflist, 'utf8'));
    assert.deepEqual(list.plugins.map((p: { type: string }) => p.type), ['weft-cni', 'portmap']);
    assert.deepEqual(list.plugins[1].capabilities, { portMappings: true });
    // runtimes pass `--network-alias` names to plugins that declare the aliases capability
    assert.deepEqual(list.plugins[0].capabilities, { aliases: true });
    // what the runtime hands the plugin: the list's name and version plus the plugin's own entry
    const cfg = parseConfig(JSON.stringify({ cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] }));
    assert.deepEqual({ network: cfg.network, agentSocket: cfg.agentSocket, name: cfg.name }, { network: 'blue', agentSocket: '/run/weft-test/api.sock', name: 'blue' });
    assert.deepEqual(fs.readdirSync(bin), ['weft-cni'], 'no temp file left');
  });

  test('--link symlinks instead; installing again replaces; a bad network name is refused', async () => {
    const bin = path.join(dir, 'bin2');
    assert.equal((await runWeft(['install-cni', '--dir', bin])).code, 0);
    const r = await runWeft(['install-cni', '--dir', bin, '--link']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readlinkSync(path.join(bin, 'weft-cni')), ensureShim());
    const bad = await runWeft(['install-cni', '--dir', bin, '--conf-dir', path.join(dir, 'n2'), '--network', '../x']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid network name/);
  });
});
