import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { wgDeviceName } from '../src/backends/wireguard/peers.js';
import { PID_FILE, runningWireguardGo, stopWireguardGo } from '../src/backends/wireguard/index.js';
import { pidAlive as processAlive } from '../src/system/process.js';
import { wgShow, wgSocketPath } from '../src/system/wireguard.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed, nsExec } from '../src/testbed/index.js';
import { inNetns } from '../src/system/netns.js';
import { waitFor } from '../src/testbed/wait.js';
import { destroyLeftovers, NETWORK, waitUntil, weft, withCluster, type Cluster } from './helpers/agent-cluster.js';
import { capture, MARKER, pingDuring, pingMarker } from './helpers/wire.js';

/**
 * The wireguard backend end to end with real agents (wireguard-go here: this kernel has no WireGuard):
 * all-pairs ping and iperf3, no plaintext on the underlay (a host-gw control shows the marker), key
 * rotation, traffic while the agent is down (wireguard-go is adopted by the next agent), a crashed
 * wireguard-go restarted and reconfigured. Every wireguard-go is stopped by PID and its socket removed.
 */

const missing = ['wireguard-go', 'wg', 'iperf3', 'tcpdump', 'ping'].filter((b) => !fs.existsSync(`/usr/bin/${b}`) && !fs.existsSync(`/usr/sbin/${b}`));
const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : missing.length ? `missing ${missing.join(', ')}` : false;

after(destroyLeftovers);

function pidFileOf(c: Cluster, host: string): string {
  return path.join(c.agent(host).stateDir, NETWORK, PID_FILE);
}

/** Stops the agents (they leave wireguard-go running, by design), then every wireguard-go by PID; checks sockets are gone. */
async function stopWireguard(c: Cluster): Promise<void> {
  for (const a of c.agents.values()) await a.stop('SIGTERM').catch(() => {});
  for (const h of c.tb.hosts) {
    const pid = await stopWireguardGo(pidFileOf(c, h.id), wgDeviceName(NETWORK, h.id));
    if (pid !== undefined) assert.equal(processAlive(pid), false, `wireguard-go ${pid} still runs`);
  }
}

test('wireguard: 3 hosts × 2 containers — all pairs, iperf3, no plaintext on the wire, key rotation, agent down, wireguard-go crash', { skip, timeout: 300_000 }, async (t) => {
  await withCluster({ backend: 'wireguard', cidr: '10.61.0.0/16', hosts: 3, containersPerHost: 2 }, async (c) => {
    try {
      await t.test('every host runs wireguard-go (detected) and reports it', async () => {
        for (const h of c.tb.hosts) {
          const st = (await c.agent(h).status())!.networks[0]!;
          const s = st.status as Record<string, unknown>;
          assert.equal(st.backend, 'wireguard');
          assert.equal(s.implementation, 'wireguard-go');
          assert.equal(s.device, wgDeviceName(NETWORK, h.id));
          assert.equal(s.keyFileMode, 0o600);
          assert.equal(st.mtu, c.tb.mtu - 80);
          assert.ok(runningWireguardGo(pidFileOf(c, h.id), wgDeviceName(NETWORK, h.id)) === s.pid, 'pid file names the running wireguard-go');
          const dev = await wgShow(String(s.device));
          assert.equal(dev.publicKey, s.publicKey);
          assert.deepEqual(dev.peers.map((p) => p.allowedIps[0]).sort(), st.peers.map((p) => p.subnet).sort());
          const key = fs.readFileSync(path.join(c.agent(h).stateDir, NETWORK, 'wireguard.key'), 'utf8');
          const lease = await c.agent(h).status();
          assert.ok(!JSON.stringify(lease).includes(key.trim()), 'the private key never leaves the key file');
        }
        const json = JSON.parse((await weft(['status', '--json', '--api', c.agent('h1').api])).stdout);
        assert.equal(json.networks[0].status.implementation, 'wireguard-go');
        assert.match(json.networks[0].status.detail, /^wireguard-go pid \d+, weftwg-[0-9a-f]{8} port 51820, 2 peers/);
      });

      await t.test('all pairs ping', async () => {
        await c.assertAllPairs();
      });

      await t.test('iperf3 across hosts', async () => {
        const [a, b] = [c.on('h1')[0]!, c.on('h2')[0]!];
        const server = c.tb.spawn(b.ns, ['iperf3', '-s', '-1']);
        try {
          const j: any = await waitFor<any>('iperf3 to run', 30_000, async () => {
            const r = await c.tb.exec(a.ns, ['iperf3', '-c', b.ip, '-t', '2', '-J'], { allowFail: true });
            try {
              const out = JSON.parse(r.stdout);
              return out.end?.sum_received?.bits_per_second ? out : `iperf3: ${out.error ?? r.stderr}`;
            } catch {
              return `iperf3: ${r.stderr}`;
            }
          });
          const gbps = j.end.sum_received.bits_per_second / 1e9;
          t.diagnostic(`iperf3 h1-c1 → h2-c1 over wireguard-go: ${gbps.toFixed(3)} Gbit/s`);
          assert.ok(gbps > 0);
        } finally {
          if (server.exitCode === null) process.kill(server.pid!, 'SIGTERM');
        }
      });

      await t.test('/metrics: a handshake time and bytes both ways for every peer after the traffic', async () => {
        const a = c.agent('h1');
        const peers = (await a.status())!.networks[0]!.peers;
        assert.equal(peers.length, 2);
        // status() reads a cache of `wg show` that is refreshed in the background: await a scrape that has them all
        await waitFor('handshake gauges of both peers', 30_000, async () => {
          const r = await nsExec(a.host.ns, ['curl', '-sS', '--max-time', '5', '--unix-socket', a.api, 'http://weft/metrics']);
          const m = new Map<string, number>();
          for (const line of r.stdout.split('\n')) {
            const hit = /^(weft_wireguard_peer_[a-z_]+)\{network="([^"]+)",peer="([^"]+)",public_key="[^"]+"\} (\S+)$/.exec(line);
            if (hit && hit[2] === NETWORK) m.set(`${hit[1]} ${hit[3]}`, Number(hit[4]));
          }
          const missing = peers.flatMap((p) =>
            ['weft_wireguard_peer_last_handshake_seconds', 'weft_wireguard_peer_receive_bytes_total', 'weft_wireguard_peer_transmit_bytes_total'].filter((k) => !((m.get(`${k} ${p.hostId}`) ?? 0) > 0)).map((k) => `${k}{peer="${p.hostId}"}`),
          );
          return missing.length === 0 || `not yet > 0: ${missing.join(', ')}`;
        });
        const r = await nsExec(a.host.ns, ['curl', '-sS', '--max-time', '5', '--unix-socket', a.api, 'http://weft/metrics']);
        assert.match(r.stdout, /^# TYPE weft_wireguard_peer_receive_bytes_total counter$/m);
        assert.match(r.stdout, /^# TYPE weft_wireguard_peer_last_handshake_seconds gauge$/m);
      });

      await t.test('the underlay carries no plaintext: the marker is not in a capture of eth0', async () => {
        const [a, b] = [c.on('h1')[0]!, c.on('h2')[1]!];
        const pcap = await capture(c, 'h1', () => pingMarker(c, a, b));
        assert.ok(pcap.length > 24 + 3 * 2 * 200, `the capture holds the traffic (${pcap.length} bytes)`);
        assert.equal(pcap.includes(MARKER.slice(0, 16)), false, 'the marker must not appear on the underlay');
      });

      await t.test('rotate-keys: a new key in the lease and on every peer; traffic resumes', async () => {
        const [a, b] = [c.on('h2')[0]!, c.on('h1')[0]!];
        const before = ((await c.agent('h1').status())!.networks[0]!.status as unknown as { publicKey: string }).publicKey;
        let out = '';
        // 16 s of pings at 10/s, the rotation after 1 s: a rotation that peers never pick up (their old key
        // for h1 makes every handshake fail, so traffic stops for good, or until something else rewrites the
        // peer) stalls the rest of the window, ≥ 14 s
        const m = await pingDuring(c, a, b, 16, async () => {
          await new Promise((r) => setTimeout(r, 1000));
          const r = await weft(['rotate-keys', '--api', c.agent('h1').api, '--json']);
          assert.equal(r.code, 0, r.stderr);
          out = r.stdout;
        });
        const rotated = JSON.parse(out) as Array<{ network: string; backendData: { PublicKey: string } }>;
        const now = rotated[0]!.backendData.PublicKey;
        assert.equal(rotated[0]!.network, NETWORK);
        assert.notEqual(now, before);
        for (const h of ['h2', 'h3']) {
          await waitUntil(`${h} to configure h1's new key`, 10_000, async () => {
            const dev = await wgShow(wgDeviceName(NETWORK, h));
            return dev.peers.some((p) => p.publicKey === now) && !dev.peers.some((p) => p.publicKey === before);
          });
        }
        t.diagnostic(`rotation: ${m.got}/${m.sent} pings answered at 10/s, longest time without a reply ${m.stallS.toFixed(2)} s`);
        // "without dropping traffic for more than a few seconds": measured 0.3–0.8 s (README). The bound is
        // 10× that for a loaded 2-core machine (the peers' reconcile follows a store watch and spawns `wg`),
        // yet well below the ≥ 14 s of a rotation the peers never pick up.
        assert.ok(m.stallS <= 8, `traffic stalled ${m.stallS.toFixed(2)} s across the key rotation (bound 8 s):\n${m.text}`);
        assert.ok(m.got >= m.sent - 80, `${m.got}/${m.sent} pings answered across the rotation`);
        await c.assertAllPairs();
      });

      await t.test('agent down: traffic flows on, the next agent adopts the same wireguard-go', async () => {
        const [a, b] = [c.on('h1')[1]!, c.on('h2')[1]!];
        const pid = runningWireguardGo(pidFileOf(c, 'h2'), wgDeviceName(NETWORK, 'h2'));
        assert.ok(pid);
        const marks: string[] = [];
        const m = await pingDuring(c, a, b, 6, async () => {
          await new Promise((r) => setTimeout(r, 500));
          marks.push(`kill at ${Date.now() / 1000}`);
          await c.agent('h2').stop('SIGKILL');
          assert.ok(processAlive(pid), 'wireguard-go outlives the agent');
          assert.ok(await c.tb.ping(a.ns, b.ip, { timeoutSec: 2 }), 'a ping is answered while the agent is down');
          const again = new AgentProcess(c.tb.host('h2'), c.agent('h2').opts);
          c.agents.set('h2', again);
          marks.push(`start at ${Date.now() / 1000}`);
          await again.start();
          marks.push(`started at ${Date.now() / 1000}`);
        });
        t.diagnostic(`agent killed and restarted: ${m.got}/${m.sent} pings answered at 10/s, longest time without a reply ${m.stallS.toFixed(2)} s${m.got < m.sent ? `\n${marks.join('\n')}\n${m.text}` : ''}`);
        // wireguard-go keeps forwarding while no agent runs (README: 60/60 answered): as in the udp e2e, at
        // most 2 of the 60 may go missing (a loaded machine delaying a reply past ping's 1 s wait)
        assert.ok(m.got >= m.sent - 2, `pings lost across the agent restart: ${m.got}/${m.sent}\n${marks.join('\n')}\n${m.text}`);
        const st = (await c.agent('h2').status())!.networks[0]!.status as unknown as { pid: number; adopted: boolean };
        assert.equal(st.pid, pid);
        assert.equal(st.adopted, true);
        await c.agent('h2').waitForPeers(2);
        await c.assertAllPairs();
      });

      await t.test('a killed wireguard-go is restarted and configured again', async () => {
        const old = runningWireguardGo(pidFileOf(c, 'h3'), wgDeviceName(NETWORK, 'h3'))!;
        process.kill(old, 'SIGKILL');
        await waitUntil('a new wireguard-go on h3', 20_000, async () => {
          const p = runningWireguardGo(pidFileOf(c, 'h3'), wgDeviceName(NETWORK, 'h3'));
          return p !== undefined && p !== old;
        });
        await waitUntil('pings to h3 again', 20_000, async () => {
          const [a, b] = [c.on('h1')[0]!, c.on('h3')[0]!];
          return c.tb.ping(a.ns, b.ip, { timeoutSec: 1 });
        });
        const st = (await c.agent('h3').status())!.networks[0]!.status as unknown as { restarts: number; healthy: boolean };
        assert.ok(st.restarts >= 1);
        assert.equal(st.healthy, true);
        await c.assertAllPairs();
      });
    } finally {
      await stopWireguard(c);
    }
  });
  const left = fs.existsSync('/var/run/wireguard') ? fs.readdirSync('/var/run/wireguard').filter((f) => ['h1', 'h2', 'h3'].some((h) => f === `${wgDeviceName(NETWORK, h)}.sock`)) : [];
  assert.deepEqual(left, [], 'wireguard-go sockets left behind');
});

test('control: with host-gw the marker IS in the underlay capture', { skip, timeout: 120_000 }, async () => {
  await withCluster({ backend: 'host-gw', cidr: '10.62.0.0/16', hosts: 2, containersPerHost: 1 }, async (c) => {
    const [a, b] = [c.on('h1')[0]!, c.on('h2')[0]!];
    const pcap = await capture(c, 'h1', () => pingMarker(c, a, b));
    assert.ok(pcap.length > 24 + 3 * 2 * 200, `the capture holds the traffic (${pcap.length} bytes)`);
    assert.equal(pcap.includes(MARKER.slice(0, 16)), true, 'the marker travels in the clear without encryption');
  });
});


test('test bed cleanup stops a wireguard-go it finds in its namespaces with SIGTERM first: no socket is left', { skip, timeout: 60_000 }, async () => {
  const tb = await createTestbed({ hosts: 1 });
  const dev = `wgc${tb.prefix}`;
  let pid: number | undefined;
  try {
    // started outside the test bed's own bookkeeping, as an agent's child would be
    const [cmd, args] = inNetns(tb.hosts[0]!.ns, 'wireguard-go', ['-f', dev]);
    const child = spawn(cmd, args, { stdio: 'ignore', env: { ...process.env, LOG_LEVEL: 'error' } });
    pid = child.pid;
    await waitFor('wireguard-go to make its socket', 10_000, () => fs.existsSync(wgSocketPath(dev)));
    await tb.destroy();
    assert.equal(processAlive(pid!), false);
    assert.equal(fs.existsSync(wgSocketPath(dev)), false, 'wireguard-go removed its socket');
  } finally {
    if (pid && processAlive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(wgSocketPath(dev), { force: true });
    await tb.destroy().catch(() => {});
  }
});
