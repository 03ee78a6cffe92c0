import { blockSize, ipToInt, parseCidr } from '../net/ipv4.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { pingOnce } from '../system/ping.js';
import type { Logger } from '../util/log.js';
import type { NetworkRunner } from './network-runner.js';
import type { StoreHealth } from './types.js';

/** What `weft status` and /metrics show that costs store round trips or pings: probed in the background, read from cache. */
export interface HealthSnapshot {
  store: StoreHealth;
  /** Per peer underlay IP: answered the last ICMP probe, and when it was probed. */
  reachable: Map<string, { ok: boolean; at: number }>;
  /** Per network: this host's endpoints and IPAM use of its pool. */
  networks: Map<string, { endpoints: number; ipamUsed: number; ipamSize: number }>;
  /** Store calls that failed or timed out since the agent started. */
  storeErrors: number;
}

/** Addresses containers can take in a pool: all but network, gateway and broadcast (none of those below a /30). */
export function poolCapacity(pool: string, first?: string, last?: string): number {
  if (first && last) return Math.max(0, ipToInt(last) - ipToInt(first) + 1);
  const size = blockSize(parseCidr(pool).len);
  return size >= 4 ? size - 3 : size;
}

/**
 * The timer's round (ms): a store read, a ping when one is due, the counts when due. Was 5 s; each round
 * woke an idle agent (issue 15: the timer rounds were the largest part of an idle agent's own CPU).
 */
export const HEALTH_INTERVAL_MS = 15_000;
/** At most this many peers are pinged per probe round. */
export const PINGS_PER_ROUND = 1;
/** A peer's reachability is probed again only when its last probe is at least this old (ms; was 5 min, issue 15). */
export const PEER_PROBE_AGE_MS = 900_000;
/**
 * The timer's rounds re-count endpoints and IPAM records (two store listings per network) only this often
 * (ms); a change on this host (attach, detach, a reconcile) asks for a full round at once (probe()/probeSoon()).
 * Between them the timer's round checks the store with one read (issue 15: the listings every 5 s were the
 * biggest part of an idle agent's own CPU). Other hosts' use of a shared pool shows within this time.
 */
export const COUNTS_REFRESH_MS = 60_000;
/**
 * No ping round starts sooner than this after the previous one (ms): each ping is a process, and an idle
 * agent's pings were half its CPU (issue 15: one every 5 s with 12+ peers). So at most 4 a minute, and with
 * N peers each one's reachability is at most max(PEER_PROBE_AGE_MS, N × PING_SPACING_MS) old.
 */
export const PING_SPACING_MS = 15_000;

/**
 * `p`, or a rejection when it has not settled within `ms`. The deadline's timer is set only when `p` is
 * still pending at the next turn of the event loop: SQLite answers before that, and a cleared timer still
 * woke the idle process once when it would have fired (Node re-arms its one libuv timer lazily).
 */
async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const early = await Promise.race([p.then((v) => ({ v })), new Promise<undefined>((r) => setImmediate(() => r(undefined)))]);
  if (early) return early.v;
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} did not answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

/**
 * Probes the store (a bounded read) every `intervalMs`, the peers (one ping each, spaced: see PING_SPACING_MS)
 * and counts endpoints/IPAM records (every COUNTS_REFRESH_MS, and at once after a change on this host), so
 * that `weft status` and /metrics answer from memory at once (< 1 s) even with the store down.
 */
export class HealthProbe {
  readonly snap: HealthSnapshot;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(
    private readonly store: Store,
    private readonly hostId: string,
    private readonly runners: () => NetworkRunner[],
    private readonly log: Logger,
    private readonly intervalMs = HEALTH_INTERVAL_MS,
    private readonly ping: (ip: string) => Promise<boolean> = (ip) => pingOnce(ip),
    private readonly pingSpacingMs = PING_SPACING_MS,
    private readonly countsRefreshMs = COUNTS_REFRESH_MS,
  ) {
    this.snap = { store: { url: store.url, healthy: true }, reachable: new Map(), networks: new Map(), storeErrors: 0 };
  }

  start(): void {
    void this.probe();
    this.timer = setInterval(() => void this.probe(false), this.intervalMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    return this.running ?? Promise.resolve();
  }

  private soonTimer?: NodeJS.Timeout;
  /** When the last round with pings started (ms since the epoch). */
  private lastPingsAt = -Infinity;
  /** When the endpoint and IPAM counts were last read (ms since the epoch). */
  private lastCountsAt = -Infinity;
  /** A full round (counts too) was asked for while one was running: the next round counts. */
  private countsWanted = false;
  /** Store listings made for the counts (tests). */
  countRounds = 0;

  /**
   * A round shortly after a change (attach, detach): once the burst is over and its answers are sent. The
   * round's store reads are synchronous (SQLite) and cost about a millisecond per hundred records: run at
   * once, they delayed the attach's own answer and the next attach.
   */
  probeSoon(delayMs = 100): void {
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      void this.probe();
    }, delayMs);
    this.soonTimer.unref();
  }

  /**
   * One round of probes (at most one at a time). `full` (the default: a change on this host) re-counts
   * endpoints and IPAM records; the timer's rounds (`full` false) count only every countsRefreshMs.
   */
  probe(full = true): Promise<void> {
    if (full) this.countsWanted = true;
    this.running ??= this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private async round(): Promise<void> {
    const started = Date.now();
    const runners = this.runners();
    const count = this.countsWanted || started - this.lastCountsAt >= this.countsRefreshMs || runners.some((r) => !this.snap.networks.has(r.name));
    this.countsWanted = false;
    const storePart = (async () => {
      try {
        await withDeadline(this.store.get('weft-health-probe'), 2000, 'the store');
        this.snap.store = { url: this.store.url, healthy: true, latencyMs: Date.now() - started, checkedAt: Date.now() };
        if (!count) return;
        this.lastCountsAt = started;
        this.countRounds++;
        for (const r of runners) {
          const keys = networkKeys(this.store, r.name);
          const [eps, ipam] = await withDeadline(
            Promise.all([this.store.list(keys.endpointsPrefix(this.hostId)), this.store.list(keys.ipamSubnetPrefix(r.plan.pool))]),
            2000,
            'the store',
          );
          const plan = r.plan;
          this.snap.networks.set(r.name, { endpoints: eps.length, ipamUsed: ipam.length, ipamSize: poolCapacity(plan.pool, plan.first, plan.last) });
        }
      } catch (err) {
        if (count) this.lastCountsAt = -Infinity; // count again on the next round
        this.snap.storeErrors++;
        this.snap.store = { url: this.store.url, healthy: false, error: (err as Error).message, checkedAt: Date.now() };
        this.log.debug({ err }, 'store probe failed');
      }
    })();
    const ips = new Set(runners.flatMap((r) => r.peers.map((p) => p.publicIp)));
    // Each ping is a process (~3 ms of CPU): one per round, never-probed and longest-ago first, none probed again within
    // PEER_PROBE_AGE_MS (issue 15: one ping per peer every 5 s was ~500 processes a second for 50 hosts).
    const lastAt = (ip: string) => this.snap.reachable.get(ip)?.at ?? 0;
    const due = started - this.lastPingsAt < this.pingSpacingMs
      ? []
      : [...ips]
          .filter((ip) => started - lastAt(ip) >= PEER_PROBE_AGE_MS)
          .sort((a, b) => lastAt(a) - lastAt(b))
          .slice(0, PINGS_PER_ROUND);
    if (due.length) this.lastPingsAt = started;
    const pings = due.map(async (ip) => this.snap.reachable.set(ip, { ok: await this.ping(ip).catch(() => false), at: Date.now() }));
    await Promise.all([storePart, ...pings]);
    for (const ip of [...this.snap.reachable.keys()]) if (!ips.has(ip)) this.snap.reachable.delete(ip);
    for (const name of [...this.snap.networks.keys()]) if (!runners.some((r) => r.name === name)) this.snap.networks.delete(name);
  }
}
