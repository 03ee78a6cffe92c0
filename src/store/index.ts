/**
 * openStore: picks the store implementation from a URL.
 *   sqlite:///abs/path.db                      (default: sqlite:///var/lib/weft/weft.db, or $WEFT_STORE)
 *   etcd://host[:port][,host[:port]...][/prefix]   (port 2379, prefix /weft by default)
 * etcd3 (gRPC, protobufs) is imported only when an etcd URL is used: a CLI call on sqlite stays fast.
 */
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { WeftError } from '../util/errors.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

export type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

export const DEFAULT_STORE_URL = 'sqlite:///var/lib/weft/weft.db';
export const DEFAULT_ETCD_PREFIX = '/weft';
/** Mode of the SQLite database file (and its -wal/-shm files). */
export const DB_FILE_MODE = 0o600;

export type StoreLocation =
  | { kind: 'sqlite'; path: string }
  /** endpoints are `http://host:port`; prefix has a leading and no trailing slash. */
  | { kind: 'etcd'; endpoints: string[]; prefix: string; flannelLayout: boolean };

const ACCEPTED = 'use sqlite:///absolute/path.db or etcd://host:port[,host:port...][/prefix]';

function bad(url: string, why: string): WeftError {
  return new WeftError(`bad store URL "${url}": ${why}; ${ACCEPTED}`, 'EBADSTOREURL');
}

/** Parses a store URL without opening anything. Throws WeftError naming the URL and the accepted forms. */
export function parseStoreUrl(url: string): StoreLocation {
  if (url.startsWith('sqlite:')) {
    const m = /^sqlite:\/\/(\/.*)$/.exec(url);
    if (!m || m[1] === '/' || m[1]!.endsWith('/')) throw bad(url, 'a sqlite URL needs an absolute file path');
    return { kind: 'sqlite', path: m[1]! };
  }
  if (url.startsWith('etcd:')) {
    const m = /^etcd:\/\/([^/]+)(\/.*)?$/.exec(url);
    if (!m) throw bad(url, 'an etcd URL needs at least one host');
    const endpoints = m[1]!.split(',').map((h) => {
      // host, host:port, [v6], [v6]:port
      const hm = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(h);
      if (!hm || (hm[2] !== undefined && (Number(hm[2]) < 1 || Number(hm[2]) > 65535))) {
        throw bad(url, `"${h}" is not host[:port]`);
      }
      return `http://${hm[1]}:${hm[2] ?? '2379'}`;
    });
    const prefix = (m[2] ?? '').replace(/\/+$/, '') || DEFAULT_ETCD_PREFIX;
    return { kind: 'etcd', endpoints, prefix, flannelLayout: prefix.endsWith('/network') };
  }
  throw bad(url, 'unknown scheme');
}

/** Opens the store at `url` (default: $WEFT_STORE, else sqlite:///var/lib/weft/weft.db). */
export async function openStore(url?: string): Promise<Store> {
  const u = url || process.env.WEFT_STORE || DEFAULT_STORE_URL;
  const loc = parseStoreUrl(u);
  if (loc.kind === 'sqlite') {
    try {
      mkdirSync(dirname(loc.path), { recursive: true, mode: 0o700 });
      const store = new SqliteStore(loc.path, { url: u });
      // leases, addresses and Docker options are nobody else's business: 0600 whatever the umask
      // (SQLite gives -wal/-shm files made later the database file's mode); only files this user owns
      for (const f of [loc.path, `${loc.path}-wal`, `${loc.path}-shm`]) {
        if (existsSync(f) && statSync(f).uid === process.getuid?.()) chmodSync(f, DB_FILE_MODE);
      }
      return store;
    } catch (err) {
      throw new WeftError(`cannot open store ${u}: ${(err as Error).message}`, 'ESTOREOPEN');
    }
  }
  const { EtcdStore } = await import('./etcd.js');
  return EtcdStore.open({ url: u, endpoints: loc.endpoints, prefix: loc.prefix });
}
