/**
 * openStore: picks the store implementation from a URL.
 *   sqlite:///abs/path.db                      (default: sqlite:///var/lib/weft/weft.db, or $WEFT_STORE)
 *   etcd://host[:port][,host[:port]...][/prefix]   (port 2379, prefix /weft by default)
 *   etcds://...                                    the same over TLS
 * etcd3 (gRPC, protobufs) is imported only when an etcd URL is used: a CLI call on sqlite stays fast.
 *
 * Every call on the store has a deadline (`timeoutMs`, default $WEFT_STORE_TIMEOUT_MS or 5000). etcd TLS
 * files come from the options or $WEFT_ETCD_CAFILE, $WEFT_ETCD_CERTFILE, $WEFT_ETCD_KEYFILE (the CLI's
 * --etcd-* flags set those); any of them turns etcd:// into TLS too.
 */
import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { WeftError } from '../util/errors.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

export type { Entry, PutOptions, Store, Watch, WatchEvent } from './types.js';

export const DEFAULT_STORE_URL = 'sqlite:///var/lib/weft/weft.db';
export const DEFAULT_ETCD_PREFIX = '/weft';
/** Mode of the SQLite database file (and its -wal/-shm files). */
export const DB_FILE_MODE = 0o600;
export const DEFAULT_STORE_TIMEOUT_MS = 5000;

export type StoreLocation =
  | { kind: 'sqlite'; path: string }
  /** endpoints are `http://host:port` (`https://` for etcds://); prefix has a leading and no trailing slash. */
  | { kind: 'etcd'; endpoints: string[]; prefix: string; flannelLayout: boolean };

/** PEM files for etcd over TLS; a client certificate needs both certFile and keyFile. */
export interface EtcdTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface OpenStoreOptions {
  /**
   * sqlite: create the database if the file does not exist. Only `weft network create` (and tests) ask;
   * everything else refuses a missing file, so a deleted database is never silently replaced by an empty one.
   */
  create?: boolean;
  /** Deadline of every store call (ms). */
  timeoutMs?: number;
  /** etcd TLS files (default: $WEFT_ETCD_CAFILE, $WEFT_ETCD_CERTFILE, $WEFT_ETCD_KEYFILE). */
  tls?: EtcdTlsFiles;
}

const ACCEPTED = 'use sqlite:///absolute/path.db or etcd://host:port[,host:port...][/prefix] (etcds:// for TLS)';

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
  if (url.startsWith('etcd:') || url.startsWith('etcds:')) {
    const m = /^etcd(s?):\/\/([^/]+)(\/.*)?$/.exec(url);
    if (!m) throw bad(url, 'an etcd URL needs at least one host');
    const scheme = m[1] ? 'https' : 'http';
    const endpoints = m[2]!.split(',').map((h) => {
      // host, host:port, [v6], [v6]:port
      const hm = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(h);
      if (!hm || (hm[2] !== undefined && (Number(hm[2]) < 1 || Number(hm[2]) > 65535))) {
        throw bad(url, `"${h}" is not host[:port]`);
      }
      return `${scheme}://${hm[1]}:${hm[2] ?? '2379'}`;
    });
    const prefix = (m[3] ?? '').replace(/\/+$/, '') || DEFAULT_ETCD_PREFIX;
    return { kind: 'etcd', endpoints, prefix, flannelLayout: prefix.endsWith('/network') };
  }
  throw bad(url, 'unknown scheme');
}

function timeoutFromEnv(): number {
  const v = process.env.WEFT_STORE_TIMEOUT_MS;
  if (v === undefined || v === '') return DEFAULT_STORE_TIMEOUT_MS;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new WeftError(`$WEFT_STORE_TIMEOUT_MS must be a positive whole number of ms, got "${v}"`);
  return n;
}

function tlsFromEnv(): EtcdTlsFiles {
  const e = process.env;
  return { caFile: e.WEFT_ETCD_CAFILE || undefined, certFile: e.WEFT_ETCD_CERTFILE || undefined, keyFile: e.WEFT_ETCD_KEYFILE || undefined };
}

/** Reads the TLS files for etcd3's credentials; undefined when none is given. Errors name the file. */
function readTls(url: string, files: EtcdTlsFiles): { rootCertificate?: Buffer; certChain?: Buffer; privateKey?: Buffer } | undefined {
  if (!files.caFile && !files.certFile && !files.keyFile) return undefined;
  if (!files.certFile !== !files.keyFile) {
    throw new WeftError(`store ${url}: a client certificate needs both --etcd-certfile and --etcd-keyfile`, 'EBADSTOREURL');
  }
  const read = (flag: string, file: string | undefined) => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new WeftError(`store ${url}: cannot read ${flag} ${file}: ${(err as Error).message}`, 'ESTOREOPEN');
    }
  };
  return {
    rootCertificate: read('--etcd-cafile', files.caFile),
    certChain: read('--etcd-certfile', files.certFile),
    privateKey: read('--etcd-keyfile', files.keyFile),
  };
}

/** Opens the store at `url` (default: $WEFT_STORE, else sqlite:///var/lib/weft/weft.db). */
export async function openStore(url?: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const u = url || process.env.WEFT_STORE || DEFAULT_STORE_URL;
  const loc = parseStoreUrl(u);
  const timeoutMs = opts.timeoutMs ?? timeoutFromEnv();
  if (loc.kind === 'sqlite') {
    try {
      const store = new SqliteStore(loc.path, { url: u, create: opts.create === true, busyTimeoutMs: timeoutMs });
      // leases, addresses and Docker options are nobody else's business: 0600 whatever the umask
      // (SQLite gives -wal/-shm files made later the database file's mode); only files this user owns
      for (const f of [loc.path, `${loc.path}-wal`, `${loc.path}-shm`]) {
        if (existsSync(f) && statSync(f).uid === process.getuid?.()) chmodSync(f, DB_FILE_MODE);
      }
      return store;
    } catch (err) {
      if (err instanceof WeftError) throw err;
      throw new WeftError(`cannot open store ${u}: ${(err as Error).message}`, 'ESTOREOPEN');
    }
  }
  const credentials = readTls(u, opts.tls ?? tlsFromEnv());
  const endpoints = credentials ? loc.endpoints.map((e) => e.replace(/^http:/, 'https:')) : loc.endpoints;
  const { EtcdStore } = await import('./etcd.js');
  return EtcdStore.open({ url: u, endpoints, prefix: loc.prefix, timeoutMs, credentials });
}
