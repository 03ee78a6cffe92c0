import fs from 'node:fs';
import path from 'node:path';
import { waitUntil, type Cluster, type Container } from './agent-cluster.js';

/** What the tunnel e2e tests (udp, wireguard) look at on the wire and how traffic behaves over time. */

/** A string sent in ping payloads: found in an underlay capture when the tunnel is plaintext, absent when encrypted. */
export const MARKER = 'WEFT-PLAINTEXT-MARKER';

/** Captures UDP on a host's underlay while `fn` runs; returns the capture's bytes. */
export async function capture(c: Cluster, host: string, fn: () => Promise<void>): Promise<Buffer> {
  const file = path.join(c.dir, `cap-${host}-${Date.now()}.pcap`);
  const h = c.tb.host(host);
  const dump = c.tb.spawn(h.ns, ['tcpdump', '--immediate-mode', '-Z', 'root', '-i', 'eth0', '-U', '-n', '-s', '0', '-w', file, 'udp or icmp']);
  let err = '';
  dump.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  await waitUntil('tcpdump to listen', 10_000, async () => err.includes('listening on'));
  try {
    await fn();
  } finally {
    process.kill(dump.pid!, 'SIGTERM');
    await new Promise((r) => (dump.exitCode !== null ? r(undefined) : dump.once('exit', r)));
  }
  return fs.readFileSync(file);
}

/** Pings with a payload pattern made of the marker (ping -p takes up to 16 bytes of hex). */
export async function pingMarker(c: Cluster, from: Container, to: Container): Promise<void> {
  const hex = Buffer.from(MARKER.slice(0, 16)).toString('hex');
  await waitUntil(`${from.label} → ${to.label} answered with the marker payload`, 15_000, async () => {
    const r = await c.tb.exec(from.ns, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '-p', hex, '-s', '200', to.ip], { allowFail: true });
    return r.code === 0 || r.stdout.split('\n').slice(-3).join(' ');
  });
}

/**
 * Runs `ping -D -i 0.1` for `seconds` while fn runs. Returns how many were answered and the longest time
 * without any reply (from the replies' arrival times: a late reply counts as a stall, a lost one too).
 */
export async function pingDuring(c: Cluster, from: Container, to: Container, seconds: number, fn: () => Promise<void>): Promise<{ sent: number; got: number; stallS: number; text: string }> {
  const count = Math.round(seconds * 10);
  const t0 = Date.now() / 1000;
  const p = c.tb.exec(from.ns, ['ping', '-D', '-n', '-i', '0.1', '-W', '1', '-c', String(count), to.ip], { allowFail: true });
  await fn();
  const r = await p;
  const t1 = Date.now() / 1000;
  const replies = [...r.stdout.matchAll(/^\[([\d.]+)\].*icmp_seq=(\d+)/gm)].map((m) => ({ at: Number(m[1]), seq: Number(m[2]) }));
  const times = [t0, ...replies.map((x) => x.at), t1];
  let stall = 0;
  for (let i = 1; i < times.length; i++) stall = Math.max(stall, times[i]! - times[i - 1]!);
  return { sent: count, got: new Set(replies.map((x) => x.seq)).size, stallS: stall, text: r.stdout };
}
