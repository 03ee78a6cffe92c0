import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket, { type Packet } from 'dns-packet';
import type { Logger } from '../util/log.js';
import { answerQuery, encodeReply, formErrFor, reply, udpLimit, type AnswerOptions } from './answer.js';
import type { RecordCache } from './records.js';
import { Forwarder, type Upstream } from './upstream.js';

/**
 * A DNS server on one address: UDP and TCP, answers from a RecordCache, forwards the rest. Every packet
 * is untrusted: anything that does not decode gets FORMERR (or nothing), and no input reaches a throw
 * outside a try. TCP connections are bounded in number, size and idle time.
 */

export interface DnsServerOptions {
  host: string;
  port: number;
  domain: string;
  ttl: number;
  network?: string;
  upstreams: Upstream[];
  forwardTimeoutMs?: number;
  log?: Logger;
}

const MAX_TCP_CONNECTIONS = 64;
const TCP_IDLE_MS = 10_000;
const MAX_CACHED_REPLIES = 4096;

/**
 * What an answer depends on besides the records: the question as sent (its case is echoed), the RD flag
 * and the size limit. undefined for anything but a plain one-question query (those are never cached).
 */
function replyKey(q: Packet, limit: (q: Packet) => number): string | undefined {
  const opcode = (q as { opcode?: string }).opcode;
  if (q.type !== 'query' || (opcode !== undefined && opcode !== 'QUERY') || q.questions?.length !== 1) return undefined;
  const qn = q.questions[0]!;
  return `${qn.name}\0${qn.type}\0${qn.class ?? 'IN'}\0${(q.flags ?? 0) & dnsPacket.RECURSION_DESIRED}\0${limit(q)}`;
}

export interface DnsServerStats {
  queries: number;
  answered: number;
  forwarded: number;
  malformed: number;
}

export class DnsServer {
  readonly stats: DnsServerStats = { queries: 0, answered: 0, forwarded: 0, malformed: 0 };
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private forwarder?: Forwarder;
  private readonly answerOpts: AnswerOptions;
  private turn = 0;
  /** Encoded answers by question (see replyKey), valid while the record cache is at repliesVersion. */
  private readonly replies = new Map<string, Buffer>();
  private repliesVersion = -1;
  private readonly tcpSockets = new Set<net.Socket>();

  constructor(
    private readonly cache: RecordCache,
    private readonly o: DnsServerOptions,
  ) {
    this.answerOpts = { domain: o.domain, ttl: o.ttl, network: o.network, canForward: o.upstreams.length > 0 };
  }

  /** Binds UDP and TCP (throws when the address is taken or absent; nothing stays bound then). */
  async start(): Promise<void> {
    try {
      if (this.o.upstreams.length) {
        this.forwarder = new Forwarder({ upstreams: this.o.upstreams, timeoutMs: this.o.forwardTimeoutMs });
        await this.forwarder.start();
      }
      // A larger receive buffer rides out bursts (the kernel caps it at net.core.rmem_max).
      const udp = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
      this.udp = udp;
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(this.o.port, this.o.host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      // send errors under a flood (ENOBUFS, a client gone): not worth more than a debug line each
      udp.on('error', (err) => this.o.log?.debug({ err }, 'DNS UDP socket error'));
      udp.on('message', (msg, rinfo) => {
        this.handle(msg, (out) => this.udp === udp && udp.send(out, rinfo.port, rinfo.address), udpLimit);
      });
      const tcp = net.createServer({ pauseOnConnect: false }, (sock) => this.onTcp(sock));
      tcp.maxConnections = MAX_TCP_CONNECTIONS;
      this.tcp = tcp;
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        // the UDP socket's port: the same as asked, or the one port 0 picked
        tcp.listen(this.port, this.o.host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      tcp.on('error', (err) => this.o.log?.warn({ err }, 'DNS TCP server error'));
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** The bound UDP port (tests bind port 0). */
  get port(): number {
    return this.udp?.address().port ?? this.o.port;
  }

  async stop(): Promise<void> {
    const udp = this.udp;
    this.udp = undefined;
    this.forwarder?.close();
    this.forwarder = undefined;
    try {
      udp?.close();
    } catch {
      /* not bound */
    }
    const tcp = this.tcp;
    this.tcp = undefined;
    for (const sock of this.tcpSockets) sock.destroy(); // close() waits for open connections
    if (tcp?.listening) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  /**
   * One query in; `respond` gets the bytes to send back (not called: send nothing). Local answers are
   * given synchronously (no promise per packet: this is the hot path); forwarded ones when the upstream
   * answers or times out. `limit` gives the size a reply may have (UDP: 512 or the client's EDNS size).
   */
  handle(raw: Buffer, respond: (out: Buffer) => void, limit: (q: Packet) => number = () => 65535): void {
    this.stats.queries++;
    let query: Packet;
    try {
      query = dnsPacket.decode(raw);
    } catch {
      this.stats.malformed++;
      const f = formErrFor(raw);
      if (f) respond(f);
      return;
    }
    try {
      const key = replyKey(query, limit);
      const cached = key === undefined ? undefined : this.cachedReply(key);
      if (cached) {
        this.stats.answered++;
        const out = Buffer.from(cached);
        out.writeUInt16BE(query.id ?? 0, 0);
        return respond(out);
      }
      const out = answerQuery(query, this.cache, this.answerOpts, this.turn++);
      if ('reply' in out) {
        this.stats.answered++;
        const bytes = encodeReply(out.reply, limit(query));
        // a single record or none: the same bytes next time (several rotate, so they are not kept)
        if (key !== undefined && (out.reply.answers?.length ?? 0) <= 1) this.keepReply(key, bytes);
        respond(bytes);
        return;
      }
      this.stats.forwarded++;
      const servfail = encodeReply(reply(query, 'SERVFAIL', this.answerOpts));
      if (!this.forwarder) return respond(servfail);
      // the answer may come after stop(): respond() then finds its socket gone and sends nothing
      void this.forwarder.forward(raw).then((answer) => respond(answer ?? servfail)).catch((err) => this.o.log?.debug({ err }, 'DNS forward answer not sent'));
    } catch (err) {
      // A packet dns-packet decoded but cannot re-encode (odd names, classes): answer FORMERR.
      this.stats.malformed++;
      this.o.log?.debug({ err }, 'DNS query failed');
      const f = formErrFor(raw);
      if (f) respond(f);
    }
  }

  private cachedReply(key: string): Buffer | undefined {
    if (this.repliesVersion !== this.cache.version) {
      this.replies.clear();
      this.repliesVersion = this.cache.version;
    }
    return this.replies.get(key);
  }

  private keepReply(key: string, bytes: Buffer): void {
    if (this.replies.size >= MAX_CACHED_REPLIES) this.replies.clear();
    this.replies.set(key, bytes);
  }

  /** DNS over TCP: 2-byte length prefix per message (RFC 1035 4.2.2), several per connection. */
  private onTcp(sock: net.Socket): void {
    let buf: Buffer = Buffer.alloc(0);
    this.tcpSockets.add(sock);
    sock.on('close', () => this.tcpSockets.delete(sock));
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        this.handle(msg, (out) => {
          if (sock.destroyed) return;
          const framed = Buffer.alloc(2 + out.length);
          framed.writeUInt16BE(out.length, 0);
          out.copy(framed, 2);
          sock.write(framed);
        });
      }
    });
  }
}
