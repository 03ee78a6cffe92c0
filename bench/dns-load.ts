/**
 * A DNS load generator (bench/dns.ts and test/dns-e2e.test.ts run it inside a namespace):
 * `node dist/bench/dns-load.js '<json LoadSpec>'` prints one JSON LoadResult line.
 * Closed loop: `window` queries in flight, each answer (or a 1 s timeout) sends the next, until `count`
 * queries went out or `maxSeconds` passed. Optionally fires `garbage` malformed packets first.
 */
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';

export interface LoadSpec {
  server: string;
  port: number;
  /** Names asked in turn (A queries). */
  names: string[];
  count: number;
  window: number;
  maxSeconds: number;
  /** Malformed and truncated packets sent before the load (default 0). */
  garbage?: number;
}

export interface LoadResult {
  sent: number;
  answered: number;
  lost: number;
  seconds: number;
  qps: number;
  p50Ms: number;
  p99Ms: number;
  rcodes: Record<string, number>;
}

const TIMEOUT_MS = 1000;

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.bind(0, () => r()));
  const queries = spec.names.map((name) => dnsPacket.encode({ type: 'query', id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] }));
  // garbage goes from its own socket: its FORMERR answers must not be taken for the load's
  const junk = dgram.createSocket('udp4');
  junk.on('error', () => {});
  for (let i = 0; i < (spec.garbage ?? 0); i++) {
    const q = queries[i % queries.length]!;
    // alternately: a truncated query, a query with random bytes after the header, pure noise
    const bad = i % 3 === 0 ? q.subarray(0, i % q.length) : i % 3 === 1 ? Buffer.concat([q.subarray(0, 12), randomBytes(1 + (i % 40))]) : randomBytes(i % 700);
    junk.send(bad, spec.port, spec.server);
  }
  const inflight = new Map<number, number>(); // id → send time (hrtime ms)
  const lat: number[] = [];
  const rcodes: Record<string, number> = {};
  let sent = 0;
  let nextId = 1;
  const t0 = performance.now();
  const deadline = t0 + spec.maxSeconds * 1000;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));

  const sendOne = () => {
    if (sent >= spec.count || performance.now() > deadline) {
      if (inflight.size === 0) finish();
      return;
    }
    let id = nextId;
    while (inflight.has(id)) id = (id + 1) & 0xffff;
    nextId = (id + 1) & 0xffff;
    const q = Buffer.from(queries[sent % queries.length]!);
    q.writeUInt16BE(id, 0);
    inflight.set(id, performance.now());
    sent++;
    sock.send(q, spec.port, spec.server);
  };
  sock.on('message', (m) => {
    if (m.length < 12) return;
    const id = m.readUInt16BE(0);
    const at = inflight.get(id);
    if (at === undefined) return;
    inflight.delete(id);
    lat.push(performance.now() - at);
    const rcode = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'][m[3]! & 0xf] ?? String(m[3]! & 0xf);
    rcodes[rcode] = (rcodes[rcode] ?? 0) + 1;
    sendOne();
  });
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [id, at] of inflight) {
      if (now - at > TIMEOUT_MS) {
        inflight.delete(id);
        sendOne();
      }
    }
    if (now > deadline + TIMEOUT_MS) finish();
  }, 50);
  for (let i = 0; i < spec.window; i++) sendOne();
  await done;
  clearInterval(sweep);
  const seconds = (performance.now() - t0) / 1000;
  sock.close();
  junk.close();
  lat.sort((a, b) => a - b);
  const pct = (p: number) => (lat.length ? Number(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(3)) : NaN);
  return { sent, answered: lat.length, lost: sent - lat.length, seconds: Number(seconds.toFixed(3)), qps: Math.round(lat.length / seconds), p50Ms: pct(0.5), p99Ms: pct(0.99), rcodes };
}

if (process.argv[1]?.endsWith('dns-load.js') && process.argv[2]) {
  const spec = JSON.parse(process.argv[2]) as LoadSpec;
  runLoad(spec).then((r) => process.stdout.write(`${JSON.stringify(r)}\n`));
}
