import dgram from 'node:dgram';
import fs from 'node:fs';
import { randomInt } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { isIPv4 } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';

/** Upstream resolvers and forwarding queries to them (UDP, with a timeout, bounded in flight). */

export interface Upstream {
  ip: string;
  port: number;
}

/** "1.2.3.4" or "1.2.3.4:5353". */
export function parseUpstream(text: string): Upstream {
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(text.trim());
  const port = m?.[2] ? Number(m[2]) : 53;
  if (!m || !isIPv4(m[1]!) || port < 1 || port > 65535) throw new WeftError(`invalid DNS upstream "${text}": use IPv4[:PORT]`);
  return { ip: m[1]!, port };
}

/**
 * IPv4 `nameserver` lines of a resolv.conf, leaving out `skip` (the gateways weft's servers listen on:
 * forwarding there would loop). IPv6 upstreams are not used (the forwarder speaks UDP over IPv4).
 */
export function upstreamsFromResolvConf(text: string, skip: readonly string[] = []): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && isIPv4(m[1]!) && !skip.includes(m[1]!) && !out.some((u) => u.ip === m[1])) out.push({ ip: m[1]!, port: 53 });
  }
  return out;
}

export function readResolvConf(file = '/etc/resolv.conf', skip: readonly string[] = []): Upstream[] {
  try {
    return upstreamsFromResolvConf(fs.readFileSync(file, 'utf8'), skip);
  } catch {
    return [];
  }
}

export interface ForwarderOptions {
  upstreams: Upstream[];
  /** Per upstream try (default 2000 ms); the next upstream is tried after it. */
  timeoutMs?: number;
  /** Most queries waiting for an upstream at once; more are answered SERVFAIL at once (default 1024). */
  maxInFlight?: number;
}

interface Pending {
  query: Buffer;
  origId: number;
  next: number;
  timer: NodeJS.Timeout;
  done: (answer: Buffer | undefined) => void;
}

/**
 * Sends queries to the upstream resolvers from one UDP socket under fresh random ids, and hands the
 * answer back with the client's id. `forward` resolves with undefined when every upstream timed out or
 * too many queries are in flight (the caller answers SERVFAIL).
 */
export class Forwarder {
  private readonly socket = dgram.createSocket('udp4');
  private readonly pending = new Map<number, Pending>();
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private closed = false;

  constructor(private readonly o: ForwarderOptions) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.maxInFlight = o.maxInFlight ?? 1024;
    // ICMP unreachable from an upstream arrives as an error on the socket: never fatal.
    this.socket.on('error', () => {});
    this.socket.on('message', (msg, rinfo) => this.onAnswer(msg, rinfo));
  }

  get inFlight(): number {
    return this.pending.size;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(0, () => {
        this.socket.off('error', reject);
        resolve();
      });
    });
  }

  forward(query: Buffer): Promise<Buffer | undefined> {
    if (this.closed || this.o.upstreams.length === 0 || this.pending.size >= this.maxInFlight || query.length < 12) {
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      let id: number;
      do id = randomInt(0, 65536);
      while (this.pending.has(id));
      const p: Pending = { query: Buffer.from(query), origId: query.readUInt16BE(0), next: 0, timer: undefined as unknown as NodeJS.Timeout, done: resolve };
      p.query.writeUInt16BE(id, 0);
      this.pending.set(id, p);
      this.send(id, p);
    });
  }

  close(): void {
    this.closed = true;
    for (const [id, p] of this.pending) this.finish(id, p, undefined);
    this.socket.close();
  }

  private send(id: number, p: Pending): void {
    const u = this.o.upstreams[p.next++];
    if (!u) return this.finish(id, p, undefined);
    p.timer = setTimeout(() => this.send(id, p), this.timeoutMs);
    this.socket.send(p.query, u.port, u.ip, () => {});
  }

  private onAnswer(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 12 || !this.o.upstreams.some((u) => u.ip === rinfo.address && u.port === rinfo.port)) return;
    const id = msg.readUInt16BE(0);
    const p = this.pending.get(id);
    if (!p || !sameQuestion(p.query, msg)) return;
    const out = Buffer.from(msg);
    out.writeUInt16BE(p.origId, 0);
    this.finish(id, p, out);
  }

  private finish(id: number, p: Pending, answer: Buffer | undefined): void {
    clearTimeout(p.timer);
    this.pending.delete(id);
    p.done(answer);
  }
}

/** A spoofed or stray answer under a guessed id must at least carry the question that was asked. */
function sameQuestion(query: Buffer, answer: Buffer): boolean {
  try {
    const q = dnsPacket.decode(query).questions?.[0];
    const a = dnsPacket.decode(answer).questions?.[0];
    return !!q && !!a && q.type === a.type && q.name.toLowerCase() === a.name.toLowerCase();
  } catch {
    return false;
  }
}
