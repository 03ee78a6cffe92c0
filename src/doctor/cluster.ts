import { randomBytes } from 'node:crypto';
import { listLeases } from '../lease/leases.js';
import { listNetworkNames } from '../store/layout.js';
import type { Store, Watch } from '../store/types.js';
import type { Logger } from '../util/log.js';
import type { Finding } from './types.js';

/**
 * `weft doctor --all` through the store. The CLI writes a request key; every agent watches for requests,
 * runs doctor on its own host and writes its report under the request; the CLI collects them.
 *
 * Why the store and not an HTTP endpoint between agents: every agent already holds an authenticated
 * connection to the store, and anyone who can write the store already controls the whole network (leases,
 * configs), so a request key grants nothing new; no port is opened on the underlay and no token has to be
 * shared. Requests and reports carry TTLs and are small; an agent answers a request once, only while it is
 * fresh, and at most one at a time.
 *
 * Keys (relative to the store's prefix; flanneld ignores them):
 *   weft-doctor/requests/<id>           {"at": ms}
 *   weft-doctor/reports/<id>/<hostId>   HostReport
 */

const ROOT = 'weft-doctor/';
const REQUESTS = `${ROOT}requests/`;
const reportsPrefix = (id: string) => `${ROOT}reports/${id}/`;
const TTL_SECONDS = 120;
/** An agent ignores requests older than this (a restarted agent must not answer stale ones). */
const FRESH_MS = 60_000;

export interface HostReport {
  hostId: string;
  publicIp?: string;
  ok: boolean;
  findings: Finding[];
  /** Why the host could not run its checks. */
  error?: string;
  at: number;
}

/** Parses a report written by another host (untrusted): undefined when it is not one. */
export function parseReport(value: string): HostReport | undefined {
  try {
    const v = JSON.parse(value) as Partial<HostReport>;
    if (typeof v?.hostId !== 'string' || typeof v.ok !== 'boolean' || !Array.isArray(v.findings)) return undefined;
    const findings = v.findings.filter(
      (f): f is Finding => !!f && typeof f.check === 'string' && typeof f.ok === 'boolean' && typeof f.message === 'string' && ['error', 'warn', 'info'].includes(f.severity as string),
    );
    return { hostId: v.hostId, ...(typeof v.publicIp === 'string' ? { publicIp: v.publicIp } : {}), ok: v.ok, findings, ...(typeof v.error === 'string' ? { error: v.error } : {}), at: typeof v.at === 'number' ? v.at : 0 };
  } catch {
    return undefined;
  }
}

/** Every host holding a live lease in any network, with its underlay address. */
export async function clusterHosts(store: Store): Promise<Map<string, string>> {
  const hosts = new Map<string, string>();
  for (const n of await listNetworkNames(store)) for (const l of await listLeases(store, n)) hosts.set(l.hostId ?? l.publicIp, l.publicIp);
  return hosts;
}

export interface ClusterReport {
  ok: boolean;
  hosts: Array<HostReport | { hostId: string; publicIp?: string; ok: false; findings: Finding[]; error: string }>;
}

/** Asks every agent for its doctor report and waits for all (or until `timeoutMs`). */
export async function askCluster(store: Store, o: { timeoutMs?: number; pollMs?: number } = {}): Promise<ClusterReport> {
  const hosts = await clusterHosts(store);
  const id = `${Date.now()}-${randomBytes(4).toString('hex')}`;
  await store.put(`${REQUESTS}${id}`, JSON.stringify({ at: Date.now() }), { ttlSeconds: TTL_SECONDS });
  const until = Date.now() + (o.timeoutMs ?? 15_000);
  const got = new Map<string, HostReport>();
  try {
    while (Date.now() < until) {
      for (const e of await store.list(reportsPrefix(id))) {
        const r = parseReport(e.value);
        if (r) got.set(r.hostId, r);
      }
      if ([...hosts.keys()].every((h) => got.has(h))) break;
      await new Promise((r) => setTimeout(r, o.pollMs ?? 250));
    }
  } finally {
    await store.delete(`${REQUESTS}${id}`).catch(() => false);
  }
  const out: ClusterReport['hosts'] = [];
  for (const [hostId, publicIp] of [...hosts].sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }))) {
    const r = got.get(hostId);
    if (r) out.push({ ...r, publicIp: r.publicIp ?? publicIp });
    else out.push({ hostId, publicIp, ok: false, findings: [], error: `host ${hostId} (${publicIp}) holds a lease but its agent did not answer within ${Math.round((o.timeoutMs ?? 15_000) / 1000)} s: the agent is down, stuck, or cannot reach the store` });
  }
  // reports from hosts without a lease (e.g. a network they could not join) are shown too
  for (const r of got.values()) if (!hosts.has(r.hostId)) out.push(r);
  return { ok: out.every((h) => h.ok), hosts: out };
}

/**
 * The agent's side: answers each fresh request once with `run()` (this host's doctor), one at a time.
 * Returns the watch; close it when the agent stops.
 */
export function answerDoctorRequests(store: Store, hostId: string, run: () => Promise<Omit<HostReport, 'hostId' | 'at'>>, log: Logger): Watch {
  const answered = new Set<string>();
  let queue = Promise.resolve();
  const answer = (key: string, value: string) => {
    const id = key.slice(REQUESTS.length);
    if (!/^[\w-]{1,64}$/.test(id) || answered.has(id)) return;
    let at = 0;
    try {
      at = Number((JSON.parse(value) as { at?: unknown }).at);
    } catch {
      return;
    }
    if (!Number.isFinite(at) || Date.now() - at > FRESH_MS) return;
    answered.add(id);
    if (answered.size > 1000) answered.delete(answered.values().next().value!);
    queue = queue.then(async () => {
      let report: HostReport;
      try {
        report = { ...(await run()), hostId, at: Date.now() };
      } catch (err) {
        report = { hostId, ok: false, findings: [], error: `doctor failed on ${hostId}: ${(err as Error).message}`, at: Date.now() };
      }
      await store.put(`${reportsPrefix(id)}${hostId}`, JSON.stringify(report), { ttlSeconds: TTL_SECONDS }).catch((err) => log.warn({ err }, 'cannot write the doctor report'));
    });
  };
  return store.watch(REQUESTS, (ev) => {
    if (ev.type === 'put') answer(ev.entry.key, ev.entry.value);
    else if (ev.type === 'resync') for (const e of ev.entries) answer(e.key, e.value);
  });
}
