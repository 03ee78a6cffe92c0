/**
 * MemoryStore: the Store in process memory, for deterministic unit tests (and simulations). Several
 * MemoryStore handles can share one MemoryBackend, like several processes on one sqlite file or several
 * clients of one etcd; closing a handle closes only its own watches.
 *
 * - revision: one global counter per backend, bumped by every put and delete (like etcd's mod_revision).
 * - TTL: expiry comes from the backend's Clock; with a FakeClock, advance() expires keys and watchers see
 *   the deletes in time order. Expired keys also read as absent at once, before their timer fires.
 * - watch: the resync and every event are delivered on a microtask, never inside the write that caused
 *   them, so a callback that writes to the store sees the same reentrancy as with the real stores.
 */
import { realClock, type Clock, type Timer } from '../util/clock.js';
import type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

interface Row {
  value: string;
  revision: number;
  expiresAt?: number;
  timer?: Timer;
}

interface Watcher {
  prefix: string;
  onEvent: (ev: WatchEvent) => void;
  closed: boolean;
}

export interface MemoryBackendOptions {
  clock?: Clock;
}

/** The shared data behind one or more MemoryStore handles. */
export class MemoryBackend {
  readonly clock: Clock;
  private readonly rows = new Map<string, Row>();
  private readonly watchers = new Set<Watcher>();
  private rev = 0;

  constructor(opts: MemoryBackendOptions = {}) {
    this.clock = opts.clock ?? realClock;
  }

  /** The store's current revision (the last write's). */
  get revision(): number {
    return this.rev;
  }

  /** The live entry at key, synchronously (tests use this to check invariants between steps). */
  peek(key: string): Entry | undefined {
    const row = this.live(key);
    return row && toEntry(key, row);
  }

  /** Every live entry under prefix, sorted by key, synchronously. */
  peekAll(prefix: string): Entry[] {
    const out: Entry[] = [];
    for (const key of [...this.rows.keys()].filter((k) => k.startsWith(prefix)).sort()) {
      const row = this.live(key);
      if (row) out.push(toEntry(key, row));
    }
    return out;
  }

  put(key: string, value: string, opts?: PutOptions): Entry {
    const ttl = opts?.ttlSeconds;
    if (ttl !== undefined && !(ttl > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttl}`);
    const old = this.rows.get(key);
    old?.timer?.cancel();
    const row: Row = { value, revision: ++this.rev };
    if (ttl !== undefined) this.expireAt(key, row, this.clock.now() + Math.round(ttl * 1000));
    this.rows.set(key, row);
    const entry = toEntry(key, row);
    this.emit(key, { type: 'put', entry });
    return entry;
  }

  compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Entry | undefined {
    if ((this.live(key)?.revision ?? 0) !== revision) return undefined;
    return this.put(key, value, opts);
  }

  refresh(key: string, revision: number, ttlSeconds: number): Entry | undefined {
    if (!(ttlSeconds > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttlSeconds}`);
    const row = this.live(key);
    if (!row || row.revision !== revision || row.expiresAt === undefined) return undefined;
    row.timer?.cancel();
    this.expireAt(key, row, this.clock.now() + Math.round(ttlSeconds * 1000));
    return toEntry(key, row);
  }

  delete(key: string, revision?: number): boolean {
    const row = this.live(key);
    if (!row || (revision !== undefined && row.revision !== revision)) return false;
    this.remove(key, row);
    return true;
  }

  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watcher {
    const w: Watcher = { prefix, onEvent, closed: false };
    // Read before joining: expiries swept by this read must not reach the new watcher ahead of its resync.
    const entries = this.peekAll(prefix);
    this.watchers.add(w);
    queueMicrotask(() => this.deliver(w, { type: 'resync', entries }));
    return w;
  }

  unwatch(w: Watcher): void {
    w.closed = true;
    this.watchers.delete(w);
  }

  /** The row at key unless it has expired (an expired row is removed now, with its delete event). */
  private live(key: string): Row | undefined {
    const row = this.rows.get(key);
    if (row?.expiresAt !== undefined && row.expiresAt <= this.clock.now()) {
      this.remove(key, row);
      return undefined;
    }
    return row;
  }

  private expireAt(key: string, row: Row, at: number): void {
    row.expiresAt = at;
    row.timer = this.clock.setTimeout(() => {
      if (this.rows.get(key) === row) this.live(key);
    }, at - this.clock.now());
  }

  private remove(key: string, row: Row): void {
    row.timer?.cancel();
    this.rows.delete(key);
    this.rev++; // a delete is a write too: later writes of the key get a higher revision
    this.emit(key, { type: 'delete', key });
  }

  private emit(key: string, ev: WatchEvent): void {
    for (const w of this.watchers) if (key.startsWith(w.prefix)) queueMicrotask(() => this.deliver(w, ev));
  }

  private deliver(w: Watcher, ev: WatchEvent): void {
    if (w.closed) return;
    try {
      w.onEvent(ev);
    } catch {
      // A throwing callback must not stop the other watchers (the real stores log and carry on too).
    }
  }
}

function toEntry(key: string, row: Row): Entry {
  const e: Entry = { key, value: row.value, revision: row.revision };
  if (row.expiresAt !== undefined) e.expiresAt = row.expiresAt;
  return e;
}

export interface MemoryStoreOptions {
  /** Share data with other handles (default: a new backend on `clock`). */
  backend?: MemoryBackend;
  clock?: Clock;
  /** Behave as a store holding flannel's single-network layout (see Store.flannelLayout). */
  flannelLayout?: boolean;
  url?: string;
}

export class MemoryStore implements Store {
  readonly url: string;
  readonly flannelLayout: boolean;
  readonly backend: MemoryBackend;
  private readonly watches = new Set<Watcher>();
  private closed = false;

  constructor(opts: MemoryStoreOptions = {}) {
    this.backend = opts.backend ?? new MemoryBackend(opts.clock ? { clock: opts.clock } : {});
    this.flannelLayout = opts.flannelLayout ?? false;
    this.url = opts.url ?? 'memory://';
  }

  /** Another handle on the same data (another "host" or process). */
  open(): MemoryStore {
    return new MemoryStore({ backend: this.backend, flannelLayout: this.flannelLayout, url: this.url });
  }

  async get(key: string): Promise<Entry | undefined> {
    this.assertOpen();
    return this.backend.peek(key);
  }

  async list(prefix: string): Promise<Entry[]> {
    this.assertOpen();
    return this.backend.peekAll(prefix);
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<Entry> {
    this.assertOpen();
    return this.backend.put(key, value, opts);
  }

  async compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined> {
    this.assertOpen();
    return this.backend.compareAndSwap(key, revision, value, opts);
  }

  async refresh(key: string, revision: number, ttlSeconds: number): Promise<Entry | undefined> {
    this.assertOpen();
    return this.backend.refresh(key, revision, ttlSeconds);
  }

  async delete(key: string, revision?: number): Promise<boolean> {
    this.assertOpen();
    return this.backend.delete(key, revision);
  }

  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watch {
    this.assertOpen();
    const w = this.backend.watch(prefix, onEvent);
    this.watches.add(w);
    return {
      close: () => {
        this.backend.unwatch(w);
        this.watches.delete(w);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.watches) this.backend.unwatch(w);
    this.watches.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`store ${this.url} is closed`);
  }
}
