/**
 * EtcdStore: the store on an etcd v3 cluster (npm `etcd3`). Keys live at `<prefix>/<key>`.
 * - revision = the key's etcd mod_revision (global and monotonic, like SqliteStore's).
 * - compareAndSwap = one txn: `Create == 0` for revision 0 (create-only), else `Mod == revision`.
 * - TTL = a fresh etcd lease granted for that write, attached by the put itself. Nobody keeps it alive:
 *   writing the key again (as a lease renewal does) attaches a new lease, the old one expires empty.
 * - watch = range read (the resync) + etcd watch from the read's revision; on any watch error,
 *   disconnect or compaction it starts over with a fresh read, so the caller sees a new resync.
 * - deadline: every call ends within `timeoutMs` (gRPC deadline plus our own timer, since etcd3 retries
 *   and dials on its own); an unreachable cluster is a one-line error naming the endpoints.
 * - close() waits for the calls in flight (each bounded by the deadline) before closing the client.
 */
import { ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError, noop } from 'cockatiel';
import etcd3 from 'etcd3';
import type { Etcd3, IKeyValue, Namespace, Watcher as EtcdWatcher } from 'etcd3';
import { log } from '../util/log.js';
import { RateLimitedLog } from '../util/rate-limited-log.js';
import { WeftError } from '../util/errors.js';
import type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

export interface EtcdStoreOptions {
  url: string;
  /** `http://host:port` each. */
  endpoints: string[];
  /** Leading slash, no trailing slash, e.g. `/weft` or `/coreos.com/network`. */
  prefix: string;
  /** Deadline of every call, and the gRPC dial timeout (ms). */
  timeoutMs?: number;
  /** TLS: CA to trust (default: the system's) and the client certificate and key (PEM). */
  credentials?: { rootCertificate?: Buffer; certChain?: Buffer; privateKey?: Buffer };
}

/** kv from a watch event or getAll() (etcd3's namespace strips the prefix from those). */
function toEntry(kv: IKeyValue): Entry {
  return { key: kv.key.toString(), value: kv.value.toString(), revision: Number(kv.mod_revision) };
}

/**
 * grpc-js hands an IP endpoint to TLS as the server name, which Node deprecates (DEP0123) with a warning on
 * stderr that tells a weft user nothing (the certificate is still checked against the IP). Drops just that.
 */
let ipServerNameWarningSilenced = false;
function silenceIpServerNameWarning(): void {
  if (ipServerNameWarningSilenced) return;
  ipServerNameWarningSilenced = true;
  const emit = process.emitWarning.bind(process) as (...a: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

function checkTtl(opts?: PutOptions): void {
  const ttl = opts?.ttlSeconds;
  if (ttl !== undefined && !(ttl > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttl}`);
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class EtcdStore implements Store {
  readonly url: string;
  readonly flannelLayout: boolean;
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly watches = new Set<PrefixWatch>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly endpoints: string[];
  readonly timeoutMs: number;
  private closed = false;

  static async open(opts: EtcdStoreOptions): Promise<EtcdStore> {
    return new EtcdStore(opts);
  }

  constructor(opts: EtcdStoreOptions) {
    this.url = opts.url;
    this.prefix = opts.prefix;
    this.flannelLayout = opts.prefix.endsWith('/network');
    this.endpoints = opts.endpoints;
    if (opts.endpoints.some((e) => e.startsWith('https:'))) silenceIpServerNameWarning();
    this.timeoutMs = opts.timeoutMs ?? 5000;
    const timeoutMs = this.timeoutMs;
    this.client = new etcd3.Etcd3({
      hosts: opts.endpoints,
      dialTimeout: timeoutMs,
      // Unary calls carry the deadline to gRPC too, so a timed-out call is cancelled, not left retrying.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
      // etcd3's default breaker refuses every call for 5 s after three failures. With one endpoint that only
      // delays recovery (calls fail for seconds after etcd is back); with several it steers calls to the live
      // ones, so keep it there but let it try again after 1 s. op() waits out a breaker that refuses within
      // the deadline.
      faultHandling: {
        host: () =>
          opts.endpoints.length === 1
            ? noop
            : circuitBreaker(handleWhen(etcd3.isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
      },
      // etcd3 wants a Buffer here, but gRPC takes null for "the system's CAs".
      ...(opts.credentials ? { credentials: { ...opts.credentials, rootCertificate: opts.credentials.rootCertificate ?? (null as unknown as Buffer) } } : {}),
    });
    this.ns = this.client.namespace(`${opts.prefix}/`);
  }

  async get(key: string): Promise<Entry | undefined> {
    return this.op('get', async () => {
      const res = await this.ns.get(key).exec();
      const kv = res.kvs[0];
      return kv && this.fromRange(kv);
    });
  }

  async list(prefix: string): Promise<Entry[]> {
    return (await this.range(prefix)).entries;
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<Entry> {
    checkTtl(opts);
    return this.op('put', async () => {
      const lease = await this.grant(opts);
      const put = this.ns.put(key).value(value);
      if (lease) put.lease(lease.id);
      const res = await put.exec();
      return this.written(key, value, Number(res.header.revision), lease);
    });
  }

  async compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined> {
    checkTtl(opts);
    return this.op('compare-and-swap', async () => {
      const lease = await this.grant(opts);
      const put = this.ns.put(key).value(value);
      if (lease) put.lease(lease.id);
      const cond = revision === 0 ? this.ns.if(key, 'Create', '==', 0) : this.ns.if(key, 'Mod', '==', revision);
      const res = await cond.then(put).commit();
      if (!res.succeeded) {
        if (lease) this.revoke(lease.id);
        return undefined;
      }
      return this.written(key, value, Number(res.header.revision), lease);
    });
  }

  /**
   * Renewal without a write: one etcd lease keepalive for the lease attached to the key, so the key keeps
   * its revision and watchers hear nothing. A keepalive resets the lease to the TTL it was granted with, so
   * this answers undefined (the caller writes again) when that is not `ttlSeconds`.
   */
  async refresh(key: string, revision: number, ttlSeconds: number): Promise<Entry | undefined> {
    if (!(ttlSeconds > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttlSeconds}`);
    const res = await this.op('get', () => this.ns.get(key).exec());
    const kv = res.kvs[0];
    if (!kv || Number(kv.mod_revision) !== revision || !kv.lease || kv.lease === '0') return undefined;
    const ttl = await this.op('lease keepalive', () => this.keepaliveOnce(kv.lease));
    if (ttl !== Math.ceil(ttlSeconds)) return undefined; // expired (0) or granted another TTL
    return { ...this.fromRange(kv), expiresAt: Date.now() + ttl * 1000 };
  }

  /** Sends one keepalive for lease `id` on a short-lived stream; resolves to the lease's new TTL (0: gone). */
  private async keepaliveOnce(id: string): Promise<number> {
    const stream = await this.ns.leaseClient.leaseKeepAlive();
    try {
      return await new Promise<number>((resolve, reject) => {
        stream.on('data', (r: { TTL: string }) => resolve(Number(r.TTL)));
        stream.on('error', reject);
        stream.write({ ID: id });
      });
    } finally {
      stream.end();
    }
  }

  async delete(key: string, revision?: number): Promise<boolean> {
    return this.op('delete', async () => {
      if (revision === undefined) {
        const res = await this.ns.delete().key(key).exec();
        return Number(res.deleted) > 0;
      }
      const res = await this.ns.if(key, 'Mod', '==', revision).then(this.ns.delete().key(key)).commit();
      return res.succeeded && Number(res.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
    });
  }

  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watch {
    if (this.closed) throw new WeftError(`store ${this.url} is closed`, 'ESTORECLOSED');
    const w = new PrefixWatch(this, this.ns, prefix, onEvent, () => this.watches.delete(w));
    this.watches.add(w);
    void w.run();
    return w;
  }

  /** Stops the watches, lets the calls in flight finish (each within its deadline), then closes the client. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watches].map((w) => w.stop()));
    await Promise.allSettled([...this.inFlight]);
    this.client.close();
  }

  // ---- internals ----

  /** One range read: the sorted live entries under prefix and the store revision they are current at. */
  async range(prefix: string): Promise<{ entries: Entry[]; revision: number }> {
    return this.op('list', async () => {
      const res = await this.ns.getAll().prefix(prefix).sort('Key', 'Ascend').exec();
      return { entries: res.kvs.map(toEntry), revision: Number(res.header.revision) };
    });
  }

  /** Runs `p` within the deadline; a late result is dropped (and handed to `late`, e.g. to cancel it). */
  withDeadline<T>(what: string, p: Promise<T>, late?: (v: T) => void): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if (late) p.then(late, () => undefined);
        reject(
          new WeftError(
            `store ${this.url}: ${what} got no answer within ${this.timeoutMs / 1000} s from etcd at ${this.endpoints.join(',')}`,
            'ESTORETIMEOUT',
          ),
        );
      }, this.timeoutMs);
    });
    return Promise.race([p, expired]).finally(() => clearTimeout(timer));
  }

  /** kv from a single-key get(): etcd3 leaves the full key there, so strip `<prefix>/`. */
  private fromRange(kv: IKeyValue): Entry {
    const e = toEntry(kv);
    e.key = e.key.slice(this.prefix.length + 1);
    return e;
  }

  private async grant(opts?: PutOptions): Promise<{ id: string; expiresAt: number } | undefined> {
    const ttl = opts?.ttlSeconds;
    if (ttl === undefined) return undefined;
    // etcd leases count whole seconds (and raise tiny TTLs to the cluster minimum, ~2 s).
    const seconds = Math.ceil(ttl);
    const res = await this.ns.leaseClient.leaseGrant({ TTL: seconds });
    return { id: res.ID, expiresAt: Date.now() + Number(res.TTL) * 1000 };
  }

  private revoke(id: string): void {
    this.ns.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined); // it expires anyway
  }

  private written(key: string, value: string, revision: number, lease?: { expiresAt: number }): Entry {
    const e: Entry = { key, value, revision };
    if (lease) e.expiresAt = lease.expiresAt;
    return e;
  }

  /**
   * One store call: refused once closed, counted as in flight until it settles, bounded by the deadline;
   * failures become one-line errors naming the store and its endpoints.
   */
  /** Runs `fn` again while every endpoint's breaker refuses, until the deadline (withDeadline then answers). */
  private async pastOpenBreakers<T>(fn: () => Promise<T>): Promise<T> {
    const giveUpAt = Date.now() + this.timeoutMs;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (!isBrokenCircuitError(err) || this.closed || Date.now() + 200 >= giveUpAt) throw err;
        await delay(200);
      }
    }
  }

  private op<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new WeftError(`store ${this.url} is closed`, 'ESTORECLOSED'));
    const p = this.withDeadline(what, this.pastOpenBreakers(fn)).catch((err: unknown) => {
      if (err instanceof WeftError) throw err;
      const msg = String((err as Error).message ?? err).split('\n')[0];
      throw new WeftError(`store ${this.url}: ${what} failed (etcd at ${this.endpoints.join(',')}): ${msg}`, 'ESTORE');
    });
    this.inFlight.add(p);
    const done = () => this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }
}

/** A watch that survives disconnects and compaction by re-listing (resync) and re-watching. */
class PrefixWatch implements Watch {
  private stopped = false;
  private current: EtcdWatcher | undefined;
  /** Wakes the run loop when the current etcd watcher fails or the watch is closed. */
  private wake: (() => void) | undefined;
  private done: Promise<void> | undefined;
  /** An unreachable etcd fails every retry: log the first, then a count. */
  private readonly faults = new RateLimitedLog(log);

  constructor(
    private readonly store: EtcdStore,
    private readonly ns: Namespace,
    private readonly prefix: string,
    private readonly onEvent: (ev: WatchEvent) => void,
    private readonly onClosed: () => void,
  ) {}

  run(): Promise<void> {
    this.done ??= this.loop();
    return this.done;
  }

  close(): void {
    void this.stop();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.onClosed();
    this.wake?.();
    await this.done?.catch(() => undefined);
  }

  private deliver(ev: WatchEvent): void {
    if (this.stopped) return;
    try {
      this.onEvent(ev);
    } catch (err) {
      log.error({ err, url: this.store.url, prefix: this.prefix }, 'store watch callback threw');
    }
  }

  private async loop(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      let watcher: EtcdWatcher | undefined;
      let failed: unknown;
      try {
        const { entries, revision } = await this.store.range(this.prefix);
        if (this.stopped) break;
        this.deliver({ type: 'resync', entries });
        this.faults.clear('lost', `store watch on ${this.prefix} is back`);
        // A watch that cannot be set up within the deadline is cancelled when it finally arrives.
        watcher = await this.store.withDeadline(
          'watch',
          this.ns.watch().prefix(this.prefix).startRevision(String(revision + 1)).create(),
          (late) => void late.cancel().catch(() => undefined),
        );
        this.current = watcher;
        backoff = 100;
        const gen = watcher;
        gen.on('error', () => undefined); // an EventEmitter 'error' without a listener would throw
        watcher.on('put', (kv) => {
          if (this.current === gen) this.deliver({ type: 'put', entry: toEntry(kv) });
        });
        watcher.on('delete', (kv) => {
          if (this.current === gen) this.deliver({ type: 'delete', key: kv.key.toString() });
        });
        // etcd3 would reconnect on its own and replay from its last revision, but it cannot recover from
        // compaction; starting over with a fresh read handles both, and the caller gets a resync.
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          if (this.stopped) resolve();
          gen.once('disconnected', (err) => {
            failed = err;
            resolve();
          });
          gen.once('error', (err) => {
            failed = err;
            resolve();
          });
        });
      } catch (err) {
        failed = err;
      }
      this.wake = undefined;
      this.current = undefined;
      // Cancel synchronously after a disconnect, before etcd3 re-attaches this watcher on its own.
      if (watcher) await watcher.cancel().catch(() => undefined);
      if (this.stopped) break;
      this.faults.warn('lost', { err: failed, url: this.store.url, prefix: this.prefix }, 'store watch lost; re-listing');
      await delay(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
  }
}
