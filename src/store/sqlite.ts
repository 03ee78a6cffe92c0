/**
 * SqliteStore: the embedded store. One file, shared safely by several processes (the demo runs several
 * agents on one machine against one file): WAL journal, a busy timeout, and every write in a
 * `BEGIN IMMEDIATE` transaction so compare-and-swap is atomic across processes.
 *
 * Revisions: every write (put or delete, including TTL sweeps) appends one row to the `changes` log; the
 * row's AUTOINCREMENT seq is the written key's revision. So revisions are global, monotonic and never
 * reused, like etcd's mod_revision.
 *
 * Watches poll the change log on a short unref'd timer. Old log rows are pruned; `meta.pruned_through`
 * records how far, so a watcher that fell behind the pruned range gets a resync instead of a silent gap.
 */
import Database from 'better-sqlite3';
import { log } from '../util/log.js';
import type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

export interface SqliteStoreOptions {
  /** The URL shown in messages (default `sqlite://` + path). */
  url?: string;
  /** Watch poll interval (ms). */
  pollMs?: number;
  /** Prune keeps at least this many newest change rows ... */
  keepChanges?: number;
  /** ... and every row younger than this (ms). */
  keepChangesMs?: number;
  /** Try a prune every this many writes made by this process. */
  pruneEvery?: number;
  /** How long a write waits for another process's lock (ms). */
  busyTimeoutMs?: number;
}

interface KvRow {
  key: string;
  value: string;
  revision: number;
  expires_at: number | null;
}

interface ChangeRow {
  seq: number;
  key: string;
  type: 'put' | 'delete';
  value: string | null;
  expires_at: number | null;
}

interface Watcher {
  prefix: string;
  onEvent: (ev: WatchEvent) => void;
  /** Last change seq this watcher has seen (or that its resync covered). */
  lastSeq: number;
  /** pending: initial resync not yet run; live: following the log; stale: must resync. */
  state: 'pending' | 'live' | 'stale';
  closed: boolean;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  revision INTEGER NOT NULL,
  expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL,
  type TEXT NOT NULL,
  value TEXT,
  expires_at INTEGER,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;

/** Most change rows read per watcher poll query (the poller loops until it has caught up). */
const BATCH = 1000;

function toEntry(row: KvRow): Entry {
  const e: Entry = { key: row.key, value: row.value, revision: row.revision };
  if (row.expires_at !== null) e.expiresAt = row.expires_at;
  return e;
}

export class SqliteStore implements Store {
  readonly url: string;
  readonly flannelLayout = false;
  private readonly db: Database.Database;
  private readonly pollMs: number;
  private readonly keepChanges: number;
  private readonly keepChangesMs: number;
  private readonly pruneEvery: number;
  private writesSincePrune = 0;
  private readonly watchers = new Set<Watcher>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly q;
  private refreshStmt: Database.Statement<[number, string]> | undefined;

  constructor(readonly path: string, opts: SqliteStoreOptions = {}) {
    this.url = opts.url ?? `sqlite://${path}`;
    this.pollMs = opts.pollMs ?? 25;
    this.keepChanges = opts.keepChanges ?? 1000;
    this.keepChangesMs = opts.keepChangesMs ?? 5 * 60_000;
    this.pruneEvery = opts.pruneEvery ?? 100;
    this.db = new Database(path);
    // busy_timeout first: switching to WAL and creating the schema may meet another process's lock.
    this.db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 10_000}`);
    this.db.pragma('journal_mode = WAL');
    // NORMAL is durable across process crashes in WAL mode (only an OS crash may lose the last commits).
    this.db.pragma('synchronous = NORMAL');
    this.db.transaction(() => this.db.exec(SCHEMA)).immediate();
    const db = this.db;
    this.q = {
      get: db.prepare<[string, number], KvRow>(
        'SELECT key, value, revision, expires_at FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)',
      ),
      // Any row, expired or not (writes sweep first, so inside a write this is the live row).
      getAny: db.prepare<[string], KvRow>('SELECT key, value, revision, expires_at FROM kv WHERE key = ?'),
      from: db.prepare<[string], KvRow>(
        'SELECT key, value, revision, expires_at FROM kv WHERE key >= ? ORDER BY key',
      ),
      upsert: db.prepare<[string, string, number, number | null]>(
        `INSERT INTO kv (key, value, revision, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, revision = excluded.revision,
           expires_at = excluded.expires_at`,
      ),
      del: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
      logChange: db.prepare<[string, string, string | null, number | null, number]>(
        'INSERT INTO changes (key, type, value, expires_at, at) VALUES (?, ?, ?, ?, ?)',
      ),
      expired: db.prepare<[number], { key: string }>(
        'SELECT key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?',
      ),
      anyExpired: db.prepare<[number], { one: number }>(
        'SELECT 1 AS one FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1',
      ),
      changesAfter: db.prepare<[number, number], ChangeRow>(
        'SELECT seq, key, type, value, expires_at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?',
      ),
      lastSeq: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'changes'"),
      prunedThrough: db.prepare<[], { value: number }>("SELECT value FROM meta WHERE name = 'pruned_through'"),
      pruneUpTo: db.prepare<[number, number], { seq: number | null }>(
        'SELECT max(seq) AS seq FROM changes WHERE seq <= ? AND at < ?',
      ),
      prune: db.prepare<[number]>('DELETE FROM changes WHERE seq <= ?'),
      setPruned: db.prepare<[number]>(
        "INSERT INTO meta (name, value) VALUES ('pruned_through', ?) ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
      ),
    };
  }

  async get(key: string): Promise<Entry | undefined> {
    const row = this.q.get.get(key, Date.now());
    return row && toEntry(row);
  }

  async list(prefix: string): Promise<Entry[]> {
    return this.listSync(prefix, Date.now());
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<Entry> {
    return this.write(() => this.putLocked(key, value, opts));
  }

  async compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined> {
    return this.write(() => {
      const current = this.q.getAny.get(key)?.revision ?? 0;
      if (current !== revision) return undefined;
      return this.putLocked(key, value, opts);
    });
  }

  /** Renewal without a change-log row: only the expiry moves, so no watcher (in any process) sees an event. */
  async refresh(key: string, revision: number, ttlSeconds: number): Promise<Entry | undefined> {
    if (!(ttlSeconds > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttlSeconds}`);
    this.refreshStmt ??= this.db.prepare<[number, string]>('UPDATE kv SET expires_at = ? WHERE key = ?');
    const stmt = this.refreshStmt;
    return this.write(() => {
      const row = this.q.getAny.get(key); // write() swept expired keys first: this is the live row
      if (!row || row.revision !== revision || row.expires_at === null) return undefined;
      const expiresAt = Date.now() + Math.round(ttlSeconds * 1000);
      stmt.run(expiresAt, key);
      return toEntry({ ...row, expires_at: expiresAt });
    });
  }

  async delete(key: string, revision?: number): Promise<boolean> {
    return this.write(() => {
      const row = this.q.getAny.get(key);
      if (!row || (revision !== undefined && row.revision !== revision)) return false;
      this.deleteLocked(key, Date.now());
      return true;
    });
  }

  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watch {
    this.assertOpen();
    const w: Watcher = { prefix, onEvent, lastSeq: 0, state: 'pending', closed: false };
    this.watchers.add(w);
    // The first resync goes out on the next turn, so the caller holds the Watch before events arrive.
    setImmediate(() => {
      if (w.closed || this.closed) return;
      try {
        this.resync(w);
      } catch (err) {
        log.warn({ err, url: this.url }, 'store watch: initial read failed, retrying on next poll');
        w.state = 'stale';
      }
    });
    if (!this.timer) {
      this.timer = setInterval(() => this.poll(), this.pollMs);
      this.timer.unref();
    }
    return {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
        if (this.watchers.size === 0 && this.timer) {
          clearInterval(this.timer);
          this.timer = undefined;
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.closed = true;
    this.watchers.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.db.close();
  }

  // ---- internals ----

  private assertOpen(): void {
    if (this.closed) throw new Error(`store ${this.url} is closed`);
  }

  private listSync(prefix: string, now: number): Entry[] {
    const out: Entry[] = [];
    // Range scan from the prefix on the primary key; rows sort bytewise, so the first row without the
    // prefix ends the range.
    for (const row of this.q.from.iterate(prefix)) {
      if (!row.key.startsWith(prefix)) break;
      if (row.expires_at === null || row.expires_at > now) out.push(toEntry(row));
    }
    return out;
  }

  /** Runs fn in a BEGIN IMMEDIATE transaction after sweeping expired keys (so they read as absent). */
  private write<T>(fn: () => T): T {
    this.assertOpen();
    const result = this.db
      .transaction(() => {
        this.sweepLocked(Date.now());
        const r = fn();
        if (++this.writesSincePrune >= this.pruneEvery) {
          this.writesSincePrune = 0;
          this.pruneLocked();
        }
        return r;
      })
      .immediate();
    return result;
  }

  private putLocked(key: string, value: string, opts?: PutOptions): Entry {
    const now = Date.now();
    const ttl = opts?.ttlSeconds;
    if (ttl !== undefined && !(ttl > 0)) throw new RangeError(`ttlSeconds must be > 0, got ${ttl}`);
    const expiresAt = ttl !== undefined ? now + Math.round(ttl * 1000) : null;
    const seq = Number(this.q.logChange.run(key, 'put', value, expiresAt, now).lastInsertRowid);
    this.q.upsert.run(key, value, seq, expiresAt);
    return toEntry({ key, value, revision: seq, expires_at: expiresAt });
  }

  private deleteLocked(key: string, now: number): void {
    this.q.del.run(key);
    this.q.logChange.run(key, 'delete', null, null, now);
  }

  /** Deletes expired keys, logging a delete for each so every process's watchers see it. */
  private sweepLocked(now: number): void {
    for (const { key } of this.q.expired.all(now)) this.deleteLocked(key, now);
  }

  private pruneLocked(): void {
    const last = this.q.lastSeq.get()?.seq ?? 0;
    const upTo = this.q.pruneUpTo.get(last - this.keepChanges, Date.now() - this.keepChangesMs)?.seq;
    if (upTo === null || upTo === undefined) return;
    this.q.prune.run(upTo);
    this.q.setPruned.run(upTo);
  }

  private resync(w: Watcher): void {
    // One read transaction: the listing and the seq it corresponds to come from the same snapshot.
    const { entries, seq } = this.db.transaction(() => ({
      entries: this.listSync(w.prefix, Date.now()),
      seq: this.q.lastSeq.get()?.seq ?? 0,
    }))();
    w.lastSeq = seq;
    w.state = 'live';
    this.deliver(w, { type: 'resync', entries });
  }

  private deliver(w: Watcher, ev: WatchEvent): void {
    if (w.closed) return;
    try {
      w.onEvent(ev);
    } catch (err) {
      log.error({ err, url: this.url, prefix: w.prefix }, 'store watch callback threw');
    }
  }

  private poll(): void {
    if (this.closed || this.watchers.size === 0) return;
    try {
      // Expired keys: any process may sweep; the delete rows reach every watcher through the log.
      if (this.q.anyExpired.get(Date.now())) this.write(() => undefined);
      this.pollChanges();
    } catch (err) {
      log.warn({ err, url: this.url }, 'store watch poll failed; retrying');
    }
  }

  private pollChanges(): void {
    for (;;) {
      // Pending watchers get their initial resync from the setImmediate scheduled in watch().
      const ready = [...this.watchers].filter((w) => w.state !== 'pending');
      if (ready.length === 0) return;
      const from = Math.min(...ready.map((w) => w.lastSeq));
      const { rows, pruned } = this.db.transaction(() => ({
        rows: this.q.changesAfter.all(from, BATCH),
        pruned: this.q.prunedThrough.get()?.value ?? 0,
      }))();
      for (const w of ready) {
        if (w.closed) continue;
        if (w.state === 'stale' || pruned > w.lastSeq) {
          // Fell behind the pruned range (or never listed): the log cannot fill the gap.
          this.resync(w);
          continue;
        }
        for (const row of rows) {
          if (w.closed) break;
          if (row.seq <= w.lastSeq) continue;
          w.lastSeq = row.seq;
          if (!row.key.startsWith(w.prefix)) continue;
          if (row.type === 'put') {
            const entry: Entry = { key: row.key, value: row.value ?? '', revision: row.seq };
            if (row.expires_at !== null) entry.expiresAt = row.expires_at;
            this.deliver(w, { type: 'put', entry });
          } else {
            this.deliver(w, { type: 'delete', key: row.key });
          }
        }
      }
      if (rows.length < BATCH) return;
    }
  }
}
