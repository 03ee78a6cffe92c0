import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe as suite, test } from 'node:test';
import type { Endpoint } from '../src/agent/types.js';
import { createNetwork } from '../src/config/registry.js';
import type { Finding } from '../src/doctor/types.js';
import { Ipam } from '../src/ipam/ipam.js';
import { openStore } from '../src/store/index.js';
import { ipJson } from '../src/system/ip.js';
import { NETNS_DIR } from '../src/system/netns.js';
import { AgentProcess, WEFT_BIN } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { needsRoot } from './helpers/require-root.js';

/**
 * `weft doctor` compares the agent's endpoint records and IPAM records with the interfaces on the host
 * (issue 8 item 7): one host (own prefix "de…"), a real agent on vxlan against a SQLite store, two
 * containers. Each difference is made by hand and doctor must name it: a record whose interface is gone, a
 * weft port no record names, an address IPAM holds for no endpoint. The agent's own repair (resync) is set
 * to an hour so it does not race the checks; the test bed is always destroyed, the agent stopped by PID.
 */

const NET = 'denet';
const CIDR = '10.214.0.0/16';

interface DoctorRun {
  code: number;
  stderr: string;
  findings: Finding[];
}

/** Runs `weft doctor --json` inside the host's namespace, like a user on that host. */
function doctor(ns: string, args: string[]): Promise<DoctorRun> {
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${NETNS_DIR}/${ns}`, process.execPath, WEFT_BIN, 'doctor', '--json', '--no-probe', ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const c = (err as NodeJS.ErrnoException | null)?.code;
      let findings: Finding[] = [];
      try {
        findings = (JSON.parse(stdout) as { findings: Finding[] }).findings;
      } catch {
        /* asserted by the caller */
      }
      resolve({ code: err ? (typeof c === 'number' ? c : 1) : 0, stderr, findings });
    });
  });
}
const failing = (r: DoctorRun) => r.findings.filter((f) => !f.ok);
const show = (r: DoctorRun) => `exit ${r.code}; stderr: ${r.stderr.trim()}; failing: ${JSON.stringify(failing(r), null, 1)}`;

const owed = new Set<() => Promise<void>>();
after(async () => {
  for (const t of [...owed]) await t().catch(() => {});
});

suite('weft doctor: endpoint records, interfaces and IPAM agree, and each difference is named', { timeout: 120_000, skip: needsRoot('iptables', 'nsenter') }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-doctor-ep-'));
  const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
  let tb: Testbed | undefined;
  let agent: AgentProcess | undefined;
  let h1: TestbedHost;
  let opts: string[];
  const eps: Endpoint[] = [];
  const teardown = async () => {
    owed.delete(teardown);
    await agent?.stop('SIGKILL').catch(() => {});
    await tb?.destroy().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  owed.add(teardown);
  const sh = (cmd: string) => nsExec(h1.ns, cmd);

  before(async () => {
    const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
    tb = await createTestbed({ prefix: 'de' + [...randomBytes(5)].map((b) => abc[b % abc.length]).join(''), hosts: 1 });
    const store = await openStore(storeUrl, { create: true });
    try {
      await createNetwork(store, NET, { Network: CIDR, Backend: { Type: 'vxlan' } });
    } finally {
      await store.close();
    }
    h1 = tb.hosts[0]!;
    agent = await new AgentProcess(h1, { storeUrl, dir, leaseTtlSeconds: 60, graceSeconds: 2, args: ['--resync', '3600'] }).start();
    await agent.waitForPeers(0);
    for (const name of ['c1', 'c2']) eps.push(await agent.attach(await tb.addContainer(h1, name)));
    opts = ['--api', agent.api, '--store', storeUrl];
  });

  after(async () => {
    await teardown();
    if (tb) {
      const left = (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n === tb!.prefix || n.startsWith(`${tb!.prefix}-`));
      assert.deepEqual(left, [], 'namespaces left behind');
    }
  });

  const agree = async (when: string) => {
    const r = await doctor(h1.ns, opts);
    assert.equal(r.code, 0, `${when}: ${show(r)}`);
    const e = r.findings.find((f) => f.check === 'endpoints');
    assert.equal(e?.message, '2 endpoint records, their interfaces and 2 allocated addresses agree', `${when}: ${show(r)}`);
  };

  test('healthy: records, interfaces and addresses agree', () => agree('healthy host'));

  test('a record whose interface is gone: an error naming the container, its address and port; attach again repairs it', async () => {
    const ep = eps[0]!;
    await sh(`ip link del ${ep.hostIf}`);
    const r = await doctor(h1.ns, opts);
    assert.equal(r.code, 1, show(r));
    assert.deepEqual(
      failing(r).map((f) => [f.check, f.severity, f.message]),
      [[`endpoint:${NET}:${ep.hostIf}`, 'error', `container ${ep.container} (${ep.address}) of ${NET} has an endpoint record but no interface ${ep.hostIf} on this host: it is cut off, and its address stays taken`]],
    );
    const again = await agent!.attach(ep.container);
    assert.equal(again.address, ep.address, 're-attach keeps the address');
    await agree('after re-attach');
  });

  test('a weft port that no record names: a warning naming it', async () => {
    await sh('ip link add vw0badc0de mtu 1450 type veth peer name vw0badc0dep mtu 1450 && ip link set vw0badc0de master weft0');
    try {
      const r = await doctor(h1.ns, opts);
      assert.deepEqual(
        failing(r).map((f) => [f.check, f.severity, f.message]),
        [['port:vw0badc0de', 'warn', 'interface vw0badc0de on weft0 is a weft container port but no endpoint record names it: leaked by an interrupted attach or detach']],
        show(r),
      );
    } finally {
      await sh('ip link del vw0badc0de 2>/dev/null || true');
    }
    await agree('after the port is deleted');
  });

  test('an address IPAM holds for no endpoint: a warning naming the address and its owner', async () => {
    const st = (await agent!.status())!;
    const subnet = st.networks[0]!.subnet;
    const store = await openStore(storeUrl);
    try {
      const ipam = new Ipam(store);
      const a = await ipam.allocate({ network: NET, subnet, owner: 'netns:ghost', host: h1.id });
      try {
        const r = await doctor(h1.ns, opts);
        assert.deepEqual(
          failing(r).map((f) => [f.check, f.severity, f.message]),
          [[`ipam:${NET}:${a.address}`, 'warn', `address ${a.address} of ${NET} is allocated to netns:ghost but no endpoint record has it: leaked (no container on this host uses it)`]],
          show(r),
        );
      } finally {
        await ipam.release({ network: NET, subnet, owner: 'netns:ghost', host: h1.id });
      }
    } finally {
      await store.close();
    }
    await agree('after the address is released');
  });
});
