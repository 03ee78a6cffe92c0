import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import type { Endpoint } from '../src/agent/types.js';
import { run } from '../src/system/exec.js';
import { inNetns } from '../src/system/netns.js';
import type { TestbedHost } from '../src/testbed/index.js';
import { destroyLeftovers, NETWORK, waitUntil, weft, withCluster, type Cluster } from './helpers/agent-cluster.js';

/**
 * podman 4.3 (Debian, CNI backend) as a real runtime on two test-bed hosts with weft agents: containers
 * started with `--network <weft conflist>` on A and B ping each other, `podman rm` frees the address on
 * weft's side, and the conflist's chained portmap makes `-p 8080:80` reachable from the host. A container's
 * name (CNI_ARGS K8S_POD_NAME) and `--network-alias` (runtimeConfig.aliases) resolve on the other host
 * until `podman rm`.
 * podman runs with `nsenter --net` only (the machine's mount namespace), so the /run/netns bind mounts it
 * makes are visible to the agent; each host gets its own --root/--runroot/--tmpdir and containers.conf.
 */

const which = (bin: string) => {
  try {
    return execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
};
const skip = process.getuid?.() !== 0 ? 'needs root' : !which('podman') ? 'podman is not installed (apt-get install podman)' : !fs.existsSync('/bin/busybox') ? 'busybox-static is not installed' : false;

after(() => destroyLeftovers());

/** One host's podman: its own storage, run dirs and config; every command runs in the host's netns. */
class HostPodman {
  readonly conf: string;
  constructor(
    readonly h: TestbedHost,
    readonly dir: string,
  ) {
    this.conf = path.join(dir, 'containers.conf');
  }

  args(a: string[]): string[] {
    return ['--root', path.join(this.dir, 'root'), '--runroot', path.join(this.dir, 'runroot'), '--tmpdir', path.join(this.dir, 'tmp'), ...a];
  }

  async podman(a: string[], o: { allowFail?: boolean } = {}) {
    const [cmd, argv] = inNetns(this.h.ns, 'podman', this.args(a));
    return run(cmd, argv, { allowFail: o.allowFail, env: { ...process.env, CONTAINERS_CONF: this.conf } });
  }

  /** Removes every container and image and unmounts what podman's storage left mounted. */
  async cleanup(): Promise<void> {
    await this.podman(['rm', '-af', '-t', '0'], { allowFail: true });
    await this.podman(['system', 'reset', '-f'], { allowFail: true });
    for (const m of fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((p) => p.startsWith(this.dir)).reverse()) {
      await run('umount', ['-l', m], { allowFail: true });
    }
  }
}

describe('podman with weft-cni', { skip, timeout: 240_000 }, () => {
  test('containers on two hosts ping each other and resolve names; podman rm frees the address and the name; -p 8080:80 through the chained portmap', { timeout: 200_000 }, () =>
    withCluster({ backend: 'host-gw', cidr: '10.94.0.0/16', hosts: 2, containersPerHost: 0 }, async (c: Cluster) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-podman-'));
      const netName = `weft-${c.tb.prefix}`;
      const pods: HostPodman[] = [];
      try {
        // busybox image from busybox-static (no registry here)
        const rootfs = path.join(dir, 'rootfs');
        for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
        fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
        fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
        for (const a of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter((x) => x && x !== 'busybox')) {
          fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
        }
        fs.symlinkSync('bin', path.join(rootfs, 'sbin'));
        const tar = path.join(dir, 'rootfs.tar');
        execFileSync('tar', ['-C', rootfs, '-cf', tar, '.']);

        for (const h of c.tb.hosts) {
          const hd = path.join(dir, h.id);
          const bin = path.join(hd, 'bin');
          const netd = path.join(hd, 'net.d');
          // `weft install-cni` is how a user puts the plugin in place: binary + example conflist
          const inst = await weft(['install-cni', '--dir', bin, '--conf-dir', netd, '--network', NETWORK, '--name', netName, '--agent-socket', c.agent(h).api, '--json']);
          assert.equal(inst.code, 0, inst.stderr);
          const installed = JSON.parse(inst.stdout) as { plugin: string; conflist: string };
          assert.equal(fs.statSync(installed.plugin).mode & 0o777, 0o755);
          fs.writeFileSync(
            path.join(hd, 'containers.conf'),
            [
              '[containers]',
              // root here lacks CAP_SYS_RESOURCE: podman's default rlimits fail
              'default_ulimits = ["nofile=20000:20000","nproc=32768:32768"]',
              '[network]',
              'network_backend = "cni"',
              `cni_plugin_dirs = ["${bin}", "/usr/lib/cni"]`,
              `network_config_dir = "${netd}"`,
              '[engine]',
              'runtime = "runc"',
              'cgroup_manager = "cgroupfs"',
              'events_logger = "file"',
              `events_logfile_path = "${path.join(hd, 'events.log')}"`,
              '',
            ].join('\n'),
            { mode: 0o644 },
          );
          const p = new HostPodman(h, hd);
          pods.push(p);
          await p.podman(['import', '-q', tar, 'localhost/busybox:local']);
        }
        const [pa, pb] = pods as [HostPodman, HostPodman];
        const [ha, hb] = c.tb.hosts as [TestbedHost, TestbedHost];
        const nameA = `${c.tb.prefix}-a`;
        const nameB = `${c.tb.prefix}-b`;
        await pa.podman(['run', '-d', '--name', nameA, '--network', netName, '-p', '8080:80', 'localhost/busybox:local', 'nc', '-ll', '-p', '80', '-e', 'echo', 'hello-from-podman']);
        await pb.podman(['run', '-d', '--name', nameB, '--network', netName, 'localhost/busybox:local', 'sleep', '600']);
        const ipOf = async (p: HostPodman, name: string) => {
          const out = (await p.podman(['inspect', '--format', `{{(index .NetworkSettings.Networks "${netName}").IPAddress}}`, name])).stdout.trim();
          assert.match(out, /^10\.94\.\d+\.\d+$/, `${name} has a weft address`);
          return out;
        };
        const ipA = await ipOf(pa, nameA);
        const ipB = await ipOf(pb, nameB);
        const eps = (h: TestbedHost) => callAgent<Endpoint[]>(c.agent(h).api, 'GET', '/endpoints');
        assert.ok((await eps(ha)).some((e) => e.address.startsWith(`${ipA}/`)), 'agent A has the endpoint');
        assert.ok((await eps(hb)).some((e) => e.address.startsWith(`${ipB}/`)), 'agent B has the endpoint');

        for (const [p, name, ip] of [[pa, nameA, ipB], [pb, nameB, ipA]] as const) {
          await waitUntil(`${name} pings ${ip}`, 20_000, async () => (await p.podman(['exec', name, 'ping', '-c', '1', '-W', '1', ip], { allowFail: true })).code === 0);
        }
        // -p 8080:80: the host's own address reaches the container through portmap's DNAT
        await waitUntil('host A :8080 reaches the container', 20_000, async () => {
          const r = await run(...inNetns(ha.ns, 'busybox', ['nc', '-w', '2', ha.ip, '8080']), { allowFail: true });
          return r.stdout.includes('hello-from-podman') || `got ${JSON.stringify(r.stdout + r.stderr)}`;
        });

        // names: podman passes the container name as CNI_ARGS K8S_POD_NAME; B's agent answers it on B's gateway
        const gwB = (await c.agent(hb).status())!.networks[0]!.gateway!;
        const lookup = async (name: string) => {
          const r = await pb.podman(['exec', nameB, 'nslookup', `${name}.weft.local`, gwB], { allowFail: true });
          const addrs = [...r.stdout.split(/^Name:/m).slice(1).join('').matchAll(/Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]);
          return { ok: r.code === 0, addrs, text: (r.stdout + r.stderr).trim() };
        };
        await waitUntil(`${nameA}.weft.local resolves to ${ipA} on B`, 20_000, async () => {
          const r = await lookup(nameA);
          return (r.ok && r.addrs.join() === ipA) || `got ${JSON.stringify(r.text)}`;
        });
        const recA = (await eps(ha)).find((e) => e.address.startsWith(`${ipA}/`));
        assert.equal(recA?.name, nameA, 'the endpoint carries the container name');
        // --network-alias: podman passes runtimeConfig.aliases (the conflist declares the capability), with the short id
        const nameW = `${nameA}w`;
        await pa.podman(['run', '-d', '--name', nameW, '--network', netName, '--network-alias', 'www', 'localhost/busybox:local', 'sleep', '600']);
        const ipW = await ipOf(pa, nameW);
        for (const n of ['www', nameW]) {
          await waitUntil(`${n}.weft.local resolves to ${ipW} on B`, 20_000, async () => {
            const r = await lookup(n);
            return (r.ok && r.addrs.join() === ipW) || `got ${JSON.stringify(r.text)}`;
          });
        }
        assert.ok((await eps(ha)).find((e) => e.address.startsWith(`${ipW}/`))?.aliases?.includes('www'), 'the endpoint carries the alias');
        await pa.podman(['rm', '-f', '-t', '0', nameW]);
        await waitUntil('www.weft.local gone on B after podman rm', 20_000, async () => {
          const r = await lookup('www');
          return (!r.ok && /NXDOMAIN|can't find/i.test(r.text)) || `got ${JSON.stringify(r.text)}`;
        });

        await pa.podman(['rm', '-f', '-t', '0', nameA]);
        await waitUntil('agent A frees the address after podman rm', 10_000, async () => !(await eps(ha)).some((e) => e.address.startsWith(`${ipA}/`)));
        await waitUntil(`${nameA}.weft.local gone on B after podman rm`, 20_000, async () => {
          const r = await lookup(nameA);
          return (!r.ok && /NXDOMAIN|can't find/i.test(r.text)) || `got ${JSON.stringify(r.text)}`;
        });
        const nat = (await run(...inNetns(ha.ns, 'iptables-save', ['-t', 'nat']))).stdout;
        assert.doesNotMatch(nat, /dport 8080/, 'portmap rules gone with the container');
        // the freed address is handed out again
        await pa.podman(['run', '-d', '--name', `${nameA}2`, '--network', netName, '--ip', ipA, 'localhost/busybox:local', 'sleep', '600']);
        assert.equal(await ipOf(pa, `${nameA}2`), ipA);
      } finally {
        for (const p of pods) await p.cleanup().catch(() => {});
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }),
  );
});
