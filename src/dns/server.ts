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
      udp.on('error', (err) => this.o.log?.warn({ err }, 'DNS UDP socket error'));
      udp.on('message', (msg, rinfo) => {
        void this.handle(msg, udpLimit).then((out) => {
          if (out) udp.send(out, rinfo.port, rinfo.address, () => {});
        });
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
    this.forwarder?.close();
    this.forwarder = undefined;
    try {
      this.udp?.close();
    } catch {
      /* not bound */
    }
    this.udp = undefined;
    const tcp = this.tcp;
    this.tcp = undefined;
    if (tcp?.listening) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  /**
   * One query in, the bytes to send back out (undefined: send nothing). `limit` gives the size a reply
   * may have (UDP: 512 or the client's EDNS size; TCP: unlimited).
   */
  async handle(raw: Buffer, limit: (q: Packet) => number = () => 65535): Promise<Buffer | undefined> {
    this.stats.queries++;
    let query: Packet;
    try {
      query = dnsPacket.decode(raw);
    } catch {
      this.stats.malformed++;
      return formErrFor(raw);
    }
    try {
      const out = answerQuery(query, this.cache, this.answerOpts, this.turn++);
      if ('reply' in out) {
        this.stats.answered++;
        return encodeReply(out.reply, limit(query));
      }
      this.stats.forwarded++;
      const answer = await this.forwarder?.forward(raw);
      return answer ?? encodeReply(reply(query, 'SERVFAIL', this.answerOpts));
    } catch (err) {
      // A packet dns-packet decoded but cannot re-encode (odd names, classes): answer FORMERR.
      this.stats.malformed++;
      this.o.log?.debug({ err }, 'DNS query failed');
      return formErrFor(raw);
    }
  }

  /** DNS over TCP: 2-byte length prefix per message (RFC 1035 4.2.2), several per connection. */
  private onTcp(sock: net.Socket): void {
    let buf: Buffer = Buffer.alloc(0);
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        void this.handle(msg).then((out) => {
          if (!out || sock.destroyed) return;
          const framed = Buffer.alloc(2 + out.length);
          framed.writeUInt16BE(out.length, 0);
          out.copy(framed, 2);
          sock.write(framed);
        });
      }
    });
  }
}
