import dnsPacket, { type Answer, type Packet, type Question } from 'dns-packet';
import { containsAddress, ipToInt, isIPv4, parseCidr } from '../net/ipv4.js';
import type { RecordCache } from './records.js';

/**
 * What the DNS server says to one query (pure: no sockets, no store). Names under the weft domain and
 * reverse names inside the network's CIDR are answered from the record cache, authoritatively; everything
 * else goes to the upstream resolvers.
 */

export interface AnswerOptions {
  /** e.g. "weft.local" (lower case, no trailing dot). */
  domain: string;
  ttl: number;
  /** The network's CIDR: reverse (PTR) names inside it are weft's to answer. */
  network?: string;
  /** Whether other names can be forwarded (RA flag; REFUSED instead of forwarding when false). */
  canForward: boolean;
}

export type Outcome = { reply: Packet } | { forward: true };

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type Rcode = keyof typeof RCODE;

/** Plain UDP answers fit in 512 bytes unless the query's EDNS record allows more (capped at 1232). */
export const UDP_PLAIN_MAX = 512;
const EDNS_MAX = 1232;

/** Picks the answer to `query`; `turn` rotates the order of several A records (round-robin). */
export function answerQuery(query: Packet, cache: RecordCache, o: AnswerOptions, turn = 0): Outcome {
  if (query.type !== 'query') return { reply: reply(query, 'FORMERR', o) };
  const opcode = (query as { opcode?: string }).opcode; // decoded packets carry it; the typings do not
  if (opcode !== undefined && opcode !== 'QUERY') return { reply: reply(query, 'NOTIMP', o) };
  const qs = query.questions ?? [];
  if (qs.length !== 1) return { reply: reply(query, 'FORMERR', o) };
  const q = qs[0]!;
  const name = q.name.toLowerCase().replace(/\.$/, '');
  const cls = q.class ?? 'IN';

  const local = localPart(name, o.domain);
  if (local !== undefined) {
    if (cls !== 'IN' && cls !== 'ANY') return { reply: reply(query, 'NOERROR', o) };
    // The domain itself exists (empty); a name exists when it has any record, whatever type was asked.
    if (local === '') return { reply: reply(query, 'NOERROR', o) };
    const ips = cache.addresses(local);
    if (ips.length === 0) return { reply: reply(query, 'NXDOMAIN', o) };
    return { reply: reply(query, 'NOERROR', o, q.type === 'A' ? aRecords(q, ips, o.ttl, turn) : []) };
  }

  const ip = reverseIp(name);
  if (ip !== undefined && (q.type === 'PTR' || q.type === 'ANY' as string)) {
    const names = cache.names(ip);
    if (names.length) {
      const answers: Answer[] = names.map((n) => ({ type: 'PTR', class: 'IN', name: q.name, ttl: o.ttl, data: `${n}.${o.domain}` }));
      return { reply: reply(query, 'NOERROR', o, answers) };
    }
    if (o.network && containsAddress(parseCidr(o.network), ipToInt(ip))) return { reply: reply(query, 'NXDOMAIN', o) };
  }

  // A bare name (no dot) that weft knows: resolvers without the search list still find containers.
  if (!name.includes('.') && q.type === 'A' && cache.addresses(name).length) {
    return { reply: reply(query, 'NOERROR', o, aRecords(q, cache.addresses(name), o.ttl, turn)) };
  }
  return o.canForward ? { forward: true } : { reply: reply(query, 'REFUSED', o) };
}

/** The part of `name` before `.domain` ("" for the domain itself), or undefined when outside it. */
export function localPart(name: string, domain: string): string | undefined {
  if (name === domain) return '';
  return name.endsWith(`.${domain}`) ? name.slice(0, -domain.length - 1) : undefined;
}

/** "4.3.2.1.in-addr.arpa" → "1.2.3.4". */
export function reverseIp(name: string): string | undefined {
  const suffix = '.in-addr.arpa';
  if (!name.endsWith(suffix)) return undefined;
  const ip = name.slice(0, -suffix.length).split('.').reverse().join('.');
  return isIPv4(ip) ? ip : undefined;
}

export function reverseName(ip: string): string {
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

function aRecords(q: Question, ips: readonly string[], ttl: number, turn: number): Answer[] {
  const n = ips.length;
  const start = n > 1 ? turn % n : 0;
  return Array.from({ length: n }, (_, i) => ({ type: 'A', class: 'IN', name: q.name, ttl, data: ips[(start + i) % n]! }));
}

/** A response to `query` with its id, question and RD flag, AA set and the given rcode. */
export function reply(query: Packet, rcode: Rcode, o: Pick<AnswerOptions, 'canForward'>, answers: Answer[] = []): Packet {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const ra = o.canForward ? dnsPacket.RECURSION_AVAILABLE : 0;
  return {
    type: 'response',
    id: query.id ?? 0,
    flags: dnsPacket.AUTHORITATIVE_ANSWER | rd | ra | RCODE[rcode],
    questions: query.questions ?? [],
    answers,
  };
}

/** How large a UDP answer to `query` may be: 512, or what its EDNS OPT record announces (≤ 1232). */
export function udpLimit(query: Packet): number {
  const opt = (query.additionals ?? []).find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
  return opt?.udpPayloadSize ? Math.max(UDP_PLAIN_MAX, Math.min(EDNS_MAX, opt.udpPayloadSize)) : UDP_PLAIN_MAX;
}

/** Encodes a reply; when it exceeds `limit` the answers are dropped and TC is set (the client retries over TCP). */
export function encodeReply(packet: Packet, limit = Infinity): Buffer {
  const buf = dnsPacket.encode(packet);
  if (buf.length <= limit) return buf;
  return dnsPacket.encode({ ...packet, answers: [], flags: (packet.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE });
}

/**
 * A FORMERR header for a packet that does not decode but has a query header (id kept), so the client
 * stops waiting; undefined for anything shorter than a header or that is itself a response.
 */
export function formErrFor(raw: Buffer): Buffer | undefined {
  if (raw.length < 12 || raw[2]! & 0x80) return undefined;
  const out = Buffer.alloc(12);
  raw.copy(out, 0, 0, 2);
  out.writeUInt16BE(0x8000 | (raw.readUInt16BE(2) & 0x7800) | RCODE.FORMERR, 2);
  return out;
}
