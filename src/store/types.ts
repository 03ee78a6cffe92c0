/**
 * The one storage seam of weft. Two implementations: sqlite (embedded, default) and etcd.
 * Keys are relative to the store's prefix (e.g. "networks/blue/config"); values are strings (JSON).
 * Everything above this file (leases, IPAM, endpoints, DNS) is built from these few operations.
 */

/** One key as the store holds it. */
export interface Entry {
  key: string;
  value: string;
  /** Changes on every write of this key; compare-and-swap compares it. Absent keys have revision 0. */
  revision: number;
  /** When a key written with a TTL expires (ms since epoch), where the store knows it. */
  expiresAt?: number;
}

export type WatchEvent =
  | { type: 'put'; entry: Entry }
  /** Deleted by a client or expired (TTL). */
  | { type: 'delete'; key: string }
  /** Full state of the watched prefix: always the first event, and again after any gap (reconnect, compaction). */
  | { type: 'resync'; entries: Entry[] };

export interface PutOptions {
  /** Key disappears this many seconds after the write unless written again. */
  ttlSeconds?: number;
}

export interface Watch {
  close(): void;
}

export interface Store {
  /** The URL it was opened with (for messages). */
  readonly url: string;
  /**
   * True when the store holds flannel's single-network layout (etcd prefix `/coreos.com/network` or any
   * prefix ending in `/network`): the network's keys sit directly under the prefix (`config`, `subnets/…`).
   */
  readonly flannelLayout: boolean;
  get(key: string): Promise<Entry | undefined>;
  /** Every live key starting with `prefix`, sorted by key. */
  list(prefix: string): Promise<Entry[]>;
  put(key: string, value: string, opts?: PutOptions): Promise<Entry>;
  /**
   * Writes only if the key's current revision is `revision` (0: only if the key is absent).
   * Returns the written entry, or undefined when the key had changed (the caller re-reads and retries).
   */
  compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined>;
  /**
   * Extends the expiry of a key written with a TTL to `ttlSeconds` from now, without a new revision and
   * without a watch event (a renewal that does not wake every watcher). Only while the key is still at
   * `revision`. Returns the entry with its new expiry, or undefined when the key changed, is gone, has no
   * TTL, or the store cannot extend it to that TTL (etcd: the key's lease was granted another TTL) — the
   * caller then writes the key again.
   */
  refresh(key: string, revision: number, ttlSeconds: number): Promise<Entry | undefined>;
  /** Deletes the key (only at `revision` when given). True when something was deleted. */
  delete(key: string, revision?: number): Promise<boolean>;
  /** Calls `onEvent` with a resync, then with every change under `prefix`, until closed. */
  watch(prefix: string, onEvent: (ev: WatchEvent) => void): Watch;
  close(): Promise<void>;
}
