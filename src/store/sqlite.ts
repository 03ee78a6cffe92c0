/**
 * SqliteStore: the embedded store. One file, shared safely by several processes (the demo runs several
 * agents on one machine against one file): WAL journal, a busy timeout, and every write in a
 * `BEGIN IMMEDIATE` transaction so compare-and-swap is atomic across processes.
 *
 * Revisions: every write (put or delete, including TTL sweeps) appends one row to the `changes` log; the
 * row's AUTOINCREMENT seq is the written key's revision. So revisions are global, monotonic and never
 * reused, like etcd's mod_revision.
 *
 * Watches cost ~nothing while nothing changes: an inotify watch on the file's directory (another process's
 * commit writes the -wal file) wakes the poller, and a slow timer compares `PRAGMA data_version` as a
 * safety net. Only when something changed is the change log read. Expired keys are swept by a timer set for
 * the next expiry, not by a poll. Old log rows are pruned; `meta.pruned_through` records how far, so a
 * watcher that fell behind the pruned range gets a resync instead of a silent gap.
 *
 * File faults are loud: the file must exist unless `create` is given (a deleted database is never silently
 * replaced by an empty one), it must pass `PRAGMA quick_check` at open, and every operation checks that
 * the path still names the file that was opened (deleted, replaced or truncated under a running process).
 * Every error names the file.
 */
import { chmodSync, closeSync, existsSync, fchmodSync, linkSync, mkdirSync, openSync, rmSync, statSync, watch as watchFs, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import Database from 'better-sqlite3';
import { WeftError } from '../util/errors.js';
import { log as rootLog, type Logger } from '../util/log.js';
import { RateLimitedLog } from '../util/rate-limited-log.js';
import type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

export interface SqliteStoreOptions {
  /** The URL shown in messages (default `sqlite://` + path). */
  url?: string;
  /**
   * Create the database when the file does not exist (mode 0600, missing directories 0700). openStore
   * passes false unless asked (only `weft network create` asks); direct construction (tests) defaults to true.
   */
  create?: boolean;
  /** Safety-net poll (ms): how often a watch compares `PRAGMA data_version` without an inotify wake-up. */
  pollMs?: number;
  /** Prune keeps at least this many newest change rows ... */
  keepChanges?: number;
  /** ... and every row younger than this (ms). */
  keepChangesMs?: number;
  /** Try a prune every this many writes made by this process. */
  pruneEvery?: number;
  /** The deadline of a store call: how long a write waits for another process's lock (ms). */
  busyTimeoutMs?: number;
  /** Where faults are logged (default: weft's log); repeats are rate limited. */
  log?: Logger;
  /** Repeated faults are summarised once per this interval (ms). */
  faultLogIntervalMs?: number;
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

/**
 * With inotify, the safety-net data_version poll runs this often (ms). inotify reports every commit of a
 * local process; the poll only bounds how late a missed wake-up is noticed. Was 5 s: a wake-up of every
 * idle agent, a fifth of its own CPU (issue 15).
 */
const SAFETY_POLL_MS = 30_000;
/** Without inotify (fs.watch failed), the data_version poll runs this often (ms). */
const FALLBACK_POLL_MS = 50;
/**
 * After an inotify wake-up, look again this long after it (ms): a commit writes its WAL frames (the
 * event) a moment before it publishes them in the wal-index, so the first look may be too early.
 */
const FOLLOW_UPS_MS = [15, 60, 250, 1000];
/** Longest wait between failed sweeps of expired keys (ms). */
const MAX_SWEEP_BACKOFF_MS = 30_000;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Creates the missing directories of `dir` with mode 0700 (existing ones are left as they are). */
function makePrivateDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      mkdirSync(d, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue; // another process made it just now
      throw err;
    }
    chmodSync(d, 0o700); // mkdir's mode is masked by the umask
  }
}

function fileError(message: string): WeftError {
  return new WeftError(message, 'ESTOREFILE');
}

export class SqliteStore implements Store {
  readonly url: string;
  readonly flannelLayout = false;
  private readonly db: Database.Database;
  private readonly pollMs: number;
  private readonly keepChanges: number;
  private readonly keepChangesMs: number;
  private readonly pruneEvery: number;
  private readonly busyTimeoutMs: number;
  private readonly faults: RateLimitedLog;
  /** The file that was opened: the path must keep naming it. */
  private readonly fileId: { dev: number; ino: number };
  private writesSincePrune = 0;
  private readonly watchers = new Set<Watcher>();
  private closed = false;
  private readonly q;
  private refreshStmt: Database.Statement<[number, string]> | undefined;
  // ---- watch machinery (only while someone watches) ----
  private fsWatcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private followUpTimer: NodeJS.Timeout | undefined;
  private followUpStep = 0;
  private tickQueued = false;
  /** data_version at the last change-log read (other connections' commits change it). */
  private dataVersion = -1;
  /** This connection wrote since the last change-log read (its own commits do not change data_version). */
  private localDirty = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  private sweepBackoffMs = 0;

  constructor(readonly path: string, opts: SqliteStoreOptions = {}) {
    this.url = opts.url ?? `sqlite://${path}`;
    this.pollMs = opts.pollMs ?? SAFETY_POLL_MS;
    this.keepChanges = opts.keepChanges ?? 1000;
    this.keepChangesMs = opts.keepChangesMs ?? 5 * 60_000;
    this.pruneEvery = opts.pruneEvery ?? 100;
    this.busyTimeoutMs = opts.busyTimeoutMs ?? 5000;
    this.faults = new RateLimitedLog(opts.log ?? rootLog, opts.faultLogIntervalMs);
    this.createIfAsked(opts.create ?? true);
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { fileMustExist: true });
      // busy_timeout first: switching to WAL and creating the schema may meet another process's lock.
      db.pragma(`busy_timeout = ${this.busyTimeoutMs}`);
      this.checkIntegrity(db);
      db.pragma('journal_mode = WAL');
      // NORMAL is durable across process crashes in WAL mode (only an OS crash may lose the last commits).
      db.pragma('synchronous = NORMAL');
      db.transaction(() => db!.exec(SCHEMA)).immediate();
      const st = statSync(path);
      this.fileId = { dev: st.dev, ino: st.ino };
    } catch (err) {
      db?.close();
      if (err instanceof WeftError) throw err;
      throw fileError(`cannot open the weft database ${path}: ${this.explain(err)}`);
    }
    this.db = db;
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
      nextExpiry: db.prepare<[], { at: number | null }>('SELECT min(expires_at) AS at FROM kv WHERE expires_at IS NOT NULL'),
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
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
    return this.op('get', () => {
      const row = this.q.get.get(key, Date.now());
      return row && toEntry(row);
    });
  }

  async list(prefix: string): Promise<Entry[]> {
    return this.op('list', () => this.listSync(prefix, Date.now()));
  }

  async put(key: string, value: string, opts?: PutOptions): Promise<Entry> {
    return this.op('put', () => this.write(() => this.putLocked(key, value, opts)));
  }

  async compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined> {
    return this.op('compare-and-swap', () =>
      this.write(() => {
        const current = this.q.getAny.get(key)?.revision ?? 0;
        if (current !== revision) return undefined;
        return this.putLocked(key, value, opts);
      }),
    );
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
    return this.op('delete', () =>
      this.write(() => {
        const row = this.q.getAny.get(key);
        if (!row || (revision !== undefined && row.revision !== revision)) return false;
        this.deleteLocked(key, Date.now());
        return true;
      }),
    );
  }

  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watch {
    this.assertOpen();
    const w: Watcher = { prefix, onEvent, lastSeq: 0, state: 'pending', closed: false };
    this.watchers.add(w);
    // The first resync goes out on the next turn, so the caller holds the Watch before events arrive.
    setImmediate(() => {
      if (w.closed || this.closed) return;
      try {
        this.checkFile();
        this.resync(w);
        this.planExpiry();
      } catch (err) {
        this.faults.error('watch', { err, url: this.url }, `store watch on ${this.path}: initial read failed; retrying`);
        w.state = 'stale';
      }
    });
    if (!this.pollTimer) this.startWake();
    return {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
        if (this.watchers.size === 0) this.stopWake();
      },
    };
  }

  /** Closes the file. SQLite calls run synchronously, so no operation of this store is ever in flight here. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.closed = true;
    this.watchers.clear();
    this.stopWake();
    this.db.close();
  }

  // ---- file checks and errors ----

  /** Makes the file when it is missing and `create` allows; true when this call made it (false: it existed, or another process won). */
  private createIfAsked(create: boolean): boolean {
    const path = this.path;
    const st = statSync(path, { throwIfNoEntry: false });
    if (st) {
      if (!st.isFile()) throw fileError(`the weft database ${path} is not a regular file`);
      if (st.size === 0) {
        throw fileError(
          `the weft database ${path} is empty (truncated?); refusing to use it — restore it from a backup, or remove it and run \`weft network create\``,
        );
      }
      return false;
    }
    if (!create) {
      throw fileError(
        `no weft database at ${path}: create one with \`weft network create\`, or point --store or $WEFT_STORE at the existing one`,
      );
    }
    for (const sidecar of [`${path}-wal`, `${path}-shm`]) {
      if (existsSync(sidecar)) {
        throw fileError(
          `the weft database ${path} is missing but ${sidecar} exists: it was deleted while in use; restore it, or remove ${sidecar} to start empty`,
        );
      }
    }
    makePrivateDirs(dirname(path));
    // Built under a temporary name and linked into place: the path never shows an empty or half-made
    // database, and when several processes create at once, exactly one link wins and the rest open it.
    const tmp = `${path}.${process.pid}.creating`;
    let made = false;
    try {
      const fd = openSync(tmp, 'wx', 0o600);
      try {
        fchmodSync(fd, 0o600); // the open mode is masked by the umask
      } finally {
        closeSync(fd);
      }
      const db = new Database(tmp);
      try {
        db.pragma('journal_mode = WAL');
        db.exec(SCHEMA);
      } finally {
        db.close(); // checkpoints and removes tmp's -wal/-shm
      }
      try {
        linkSync(tmp, path);
        made = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    } catch (err) {
      throw fileError(`cannot create the weft database ${path}: ${(err as Error).message}`);
    } finally {
      for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
    }
    return made;
  }

  /** Refuses a corrupt file, or one that is not a weft database, naming it. */
  private checkIntegrity(db: Database.Database): void {
    const problems = (db.pragma('quick_check') as { quick_check: string }[]).map((r) => r.quick_check);
    if (problems.length !== 1 || problems[0] !== 'ok') {
      throw fileError(
        `the weft database ${this.path} is corrupt (PRAGMA quick_check: ${problems.slice(0, 3).join('; ')}); restore it from a backup`,
      );
    }
    if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'").get()) {
      throw fileError(`${this.path} is a SQLite file but not a weft database (no kv table); refusing to use it`);
    }
  }

  /** Throws when the path no longer names the file this store opened, or that file was emptied. */
  private checkFile(): void {
    const st = statSync(this.path, { throwIfNoEntry: false });
    let what: string | undefined;
    if (!st) what = 'was deleted';
    else if (st.ino !== this.fileId.ino || st.dev !== this.fileId.dev) what = 'was replaced by another file';
    else if (st.size === 0) what = 'was truncated to 0 bytes';
    if (what) {
      throw fileError(
        `the weft database ${this.path} ${what} while this process had it open; refusing to go on with the old copy (restore the file and restart weft)`,
      );
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new WeftError(`store ${this.url} is closed`, 'ESTORECLOSED');
  }

  /** One store call: the file is checked first, and any failure becomes an error naming the file. */
  private op<T>(what: string, fn: () => T): T {
    this.assertOpen();
    try {
      this.checkFile();
      return fn();
    } catch (err) {
      if (err instanceof RangeError) throw err; // a caller's mistake (bad TTL), not a store fault
      const code = err instanceof WeftError ? err.code : 'ESTORE';
      throw new WeftError(`store ${this.url}: ${what} failed: ${this.explain(err)}`, code);
    }
  }

  private explain(err: unknown): string {
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_BUSY') return `database is locked by another process (waited ${this.busyTimeoutMs} ms)`;
    if (code === 'SQLITE_NOTADB') return 'not a SQLite database (corrupt or overwritten); restore it from a backup';
    if (code?.startsWith('SQLITE_CORRUPT')) return `the file is corrupt (${(err as Error).message}); restore it from a backup`;
    return err instanceof Error ? err.message : String(err);
  }

  // ---- reads and writes ----

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
    // Our own commits do not change our data_version: tell this process's watchers directly.
    this.localDirty = true;
    if (this.watchers.size > 0) this.queueTick();
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

  // ---- watches ----

  /** Wake-ups for the watches: inotify on the file's directory plus a slow data_version poll. */
  private startWake(): void {
    const names = new Set([basename(this.path), `${basename(this.path)}-wal`]);
    let interval = this.pollMs;
    try {
      // The directory, not the files: the -wal file comes and goes (deleted when the last connection
      // closes), and a deleted or replaced database shows up here at once.
      this.fsWatcher = watchFs(dirname(this.path), { persistent: false }, (_type, name) => {
        if (name === null || names.has(String(name))) this.wake();
      });
      this.fsWatcher.on('error', (err) => {
        this.faults.warn('inotify', { err, url: this.url }, `store watch on ${this.path}: inotify failed; polling every ${FALLBACK_POLL_MS} ms`);
        this.fsWatcher?.close();
        this.fsWatcher = undefined;
        this.restartPoll(FALLBACK_POLL_MS);
      });
    } catch (err) {
      this.faults.warn('inotify', { err, url: this.url }, `store watch on ${this.path}: no inotify; polling every ${FALLBACK_POLL_MS} ms`);
      interval = FALLBACK_POLL_MS;
    }
    this.restartPoll(interval);
  }

  private restartPoll(ms: number): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = setInterval(() => this.tick(), ms);
    this.pollTimer.unref();
  }

  private stopWake(): void {
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    clearTimeout(this.followUpTimer);
    this.followUpTimer = undefined;
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
  }

  /** The file changed (inotify): look now, and again a little later (see FOLLOW_UPS_MS). */
  private wake(): void {
    this.queueTick();
    this.followUpStep = 0;
    if (!this.followUpTimer) this.scheduleFollowUp();
  }

  private scheduleFollowUp(): void {
    const ms = FOLLOW_UPS_MS[this.followUpStep];
    if (ms === undefined) return;
    const prev = FOLLOW_UPS_MS[this.followUpStep - 1] ?? 0;
    this.followUpTimer = setTimeout(() => {
      this.followUpTimer = undefined;
      this.followUpStep++;
      this.tick();
      this.scheduleFollowUp();
    }, ms - prev);
    this.followUpTimer.unref();
  }

  private queueTick(): void {
    if (this.tickQueued) return;
    this.tickQueued = true;
    setImmediate(() => {
      this.tickQueued = false;
      this.tick();
    });
  }

  /** Reads the change log only when something changed: data_version (others' commits) or our own writes. */
  private tick(): void {
    if (this.closed || this.watchers.size === 0) return;
    try {
      this.checkFile();
      const version = this.q.dataVersion.get()!;
      const stale = [...this.watchers].some((w) => w.state === 'stale');
      if (version === this.dataVersion && !this.localDirty && !stale) return;
      this.dataVersion = version;
      this.localDirty = false;
      this.pollChanges();
      this.planExpiry();
      this.faults.clear('watch', `store watch on ${this.path} works again`);
    } catch (err) {
      this.faults.error('watch', { err, url: this.url }, `store watch on ${this.path} failed; retrying`);
    }
  }

  /** Sets one timer for the next TTL expiry (instead of a query every few ms). */
  private planExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.closed || this.watchers.size === 0) return;
    const at = this.q.nextExpiry.get()?.at;
    if (at === null || at === undefined) return;
    const ms = Math.min(MAX_TIMER_MS, Math.max(this.sweepBackoffMs, at - Date.now() + 1));
    this.expiryTimer = setTimeout(() => this.sweep(), ms);
    this.expiryTimer.unref();
  }

  /** Deletes expired keys (any process may; the delete rows reach every watcher through the log). */
  private sweep(): void {
    this.expiryTimer = undefined;
    if (this.closed || this.watchers.size === 0) return;
    try {
      this.checkFile();
      if (this.q.anyExpired.get(Date.now())) this.write(() => undefined);
      this.sweepBackoffMs = 0;
      this.faults.clear('sweep', `store ${this.url}: removing expired keys works again`);
    } catch (err) {
      this.sweepBackoffMs = Math.min(MAX_SWEEP_BACKOFF_MS, Math.max(250, this.sweepBackoffMs * 2));
      this.faults.error('sweep', { err: this.opError('sweep', err), url: this.url }, `store ${this.url}: removing expired keys failed; retrying`);
    }
    try {
      this.planExpiry();
    } catch (err) {
      this.faults.error('watch', { err, url: this.url }, `store watch on ${this.path} failed; retrying`);
    }
  }

  private opError(what: string, err: unknown): Error {
    return new WeftError(`store ${this.url}: ${what} failed: ${this.explain(err)}`, 'ESTORE');
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
      this.faults.error(`callback ${w.prefix}`, { err, url: this.url, prefix: w.prefix }, 'store watch callback threw');
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
