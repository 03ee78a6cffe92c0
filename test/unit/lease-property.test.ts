/**
 * Property test of lease safety next to flannel (issue 9): random interleavings of weft hosts acquiring,
 * renewing, racing and restarting after their TTL, flannel-like clients that write only `subnets/` keys
 * (plain and dual-stack, as flanneld does), and time passing on a fake clock. After every step:
 *   - no two live lease keys name the same IPv4 subnet;
 *   - no write ever replaced or deleted a live lease key last written by another holder (checked at the
 *     moment of each write, atomically with it, by the store handles below).
 * Set WEFT_PROPERTY_SEED / WEFT_PROPERTY_RUNS to replay or to run longer; the seed is printed either way.
 */
import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { LeaseManager } from '../../src/lease/manager.js';
import { parseLeaseKey } from '../../src/store/layout.js';
import { SubnetRange } from '../../src/lease/subnets.js';
import { networkKeys } from '../../src/store/layout.js';
import { MemoryBackend, MemoryStore } from '../../src/store/memory.js';
import type { Entry, PutOptions } from '../../src/store/types.js';
import { FakeClock } from '../../src/util/clock.js';
import { createNetwork } from '../../src/config/registry.js';
import { pump, quiet } from '../helpers/lease-fakes.js';

const SEED = Number(process.env.WEFT_PROPERTY_SEED ?? 20261123);
const RUNS = Number(process.env.WEFT_PROPERTY_RUNS ?? 300);
const NET = 'p';
const TTL = 60;
const GRACE = 30;
const FLANNEL_TTL = 60;
const HOSTS = 3;
const CLIENTS = 2;

/** Who last wrote each revision; every write through an OwnedStore checks it is not taking another's live key. */
class Ledger {
  readonly owner = new Map<number, string>();
  readonly violations: string[] = [];
  check(backend: MemoryBackend, writer: string, key: string, what: string): void {
    if (!key.startsWith(networkKeys(new MemoryStore(), NET).subnetsPrefix)) return;
    const before = backend.peek(key);
    if (before && this.owner.get(before.revision) !== writer) {
      this.violations.push(`${writer} ${what} ${key}, a live lease of ${this.owner.get(before.revision)} (${before.value})`);
    }
  }
}

/** A store handle that says who writes through it. The check and the write run in one synchronous step. */
class OwnedStore extends MemoryStore {
  constructor(backend: MemoryBackend, private readonly writer: string, private readonly ledger: Ledger) {
    super({ backend });
  }
  override put(key: string, value: string, opts?: PutOptions): Promise<Entry> {
    this.ledger.check(this.backend, this.writer, key, 'overwrote');
    const p = super.put(key, value, opts);
    return p.then((e) => (this.ledger.owner.set(e.revision, this.writer), e));
  }
  override compareAndSwap(key: string, revision: number, value: string, opts?: PutOptions): Promise<Entry | undefined> {
    const cur = this.backend.peek(key);
    if (cur && cur.revision === revision) this.ledger.check(this.backend, this.writer, key, 'swapped');
    const p = super.compareAndSwap(key, revision, value, opts);
    return p.then((e) => (e && this.ledger.owner.set(e.revision, this.writer), e));
  }
  override delete(key: string, revision?: number): Promise<boolean> {
    const cur = this.backend.peek(key);
    if (cur && (revision === undefined || cur.revision === revision)) this.ledger.check(this.backend, this.writer, key, 'deleted');
    return super.delete(key, revision);
  }
}

type Cmd =
  | { kind: 'acquire'; host: number }
  | { kind: 'renew'; host: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'restartAfterTtl'; host: number; extraMs: number; newVtep: boolean }
  | { kind: 'race'; a: number; b: number }
  | { kind: 'flannel'; client: number; dual: boolean; pick: number };

const host = fc.integer({ min: 0, max: HOSTS - 1 });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ kind: fc.constant('acquire' as const), host }),
  fc.record({ kind: fc.constant('renew' as const), host }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1_000, max: 2 * (TTL + GRACE) * 1000 }) }),
  fc.record({ kind: fc.constant('restartAfterTtl' as const), host, extraMs: fc.integer({ min: 0, max: 2 * GRACE * 1000 }), newVtep: fc.boolean() }),
  fc.record({ kind: fc.constant('race' as const), a: host, b: host }),
  fc.record({ kind: fc.constant('flannel' as const), client: fc.integer({ min: 0, max: CLIENTS - 1 }), dual: fc.boolean(), pick: fc.nat() }),
);

/** What the runs did, to show in the diagnostics that they exercised something. */
const stats = { acquired: 0, full: 0, flannelLeases: 0, restarts: 0, renewals: 0 };

async function scenario(cmds: Cmd[]): Promise<void> {
  const clock = new FakeClock();
  const backend = new MemoryBackend({ clock });
  const ledger = new Ledger();
  const admin = new MemoryStore({ backend });
  // 4 subnets: hosts and clients contend for them
  await createNetwork(admin, NET, { Network: '10.60.0.0/22', SubnetLen: 24, SubnetMin: '10.60.0.0', Backend: { Type: 'vxlan', VNI: 1 } });
  const keys = networkKeys(admin, NET);
  const range = new SubnetRange({ Network: '10.60.0.0/22', SubnetLen: 24, SubnetMin: '10.60.0.0' });
  const boots = Array.from({ length: HOSTS }, () => 0); // a reboot recreates the VTEP: a new VtepMAC
  const req = (h: number) => ({ publicIp: `192.168.0.${h + 1}`, backendData: { VNI: 1, VtepMAC: `02:00:00:00:${boots[h]! % 256}:0${h}` } });
  const managers: Array<LeaseManager | undefined> = [];
  const boot = (h: number) =>
    (managers[h] = new LeaseManager(new OwnedStore(backend, `weft-h${h}`, ledger), NET, { hostId: `h${h}`, ttlSeconds: TTL, graceSeconds: GRACE, clock, log: quiet }));
  const acquire = async (h: number) => {
    const m = managers[h] ?? boot(h);
    try {
      const lease = await pump(clock, m.acquire(req(h)), 5);
      const live = backend.peekAll(keys.subnetsPrefix).filter((e) => parseLeaseKey(e.key.slice(keys.subnetsPrefix.length))?.subnet === lease.subnet);
      assert.equal(live.length, 1, `h${h} got ${lease.subnet} but it has ${live.length} keys`);
      assert.equal(ledger.owner.get(live[0]!.revision), `weft-h${h}`, `h${h} got ${lease.subnet} but does not hold its key`);
      stats.acquired++;
    } catch (err) {
      if (!/is full/.test((err as Error).message)) throw err;
      stats.full++;
    }
  };
  const clientStores = Array.from({ length: CLIENTS }, (_, c) => new OwnedStore(backend, `flannel-c${c}`, ledger));
  const flannel = async (c: number, dual: boolean, pick: number) => {
    const s = clientStores[c]!;
    const ip = `192.168.0.${101 + c}`;
    const entries = await s.list(keys.subnetsPrefix);
    const own = entries.find((e) => JSON.parse(e.value).PublicIP === ip);
    if (own) {
      // flanneld renews by rewriting its lease at its revision
      await s.compareAndSwap(own.key, own.revision, own.value, { ttlSeconds: FLANNEL_TTL });
      return;
    }
    const taken = new Set(entries.map((e) => parseLeaseKey(e.key.slice(keys.subnetsPrefix.length))?.subnet));
    const free = [...range.all()].filter((x) => !taken.has(x));
    if (free.length === 0) return;
    const subnet = free[pick % free.length]!;
    const key = `${keys.subnet(subnet)}${dual ? `&fd60:0:0:${c + 1}::-64` : ''}`;
    const value = JSON.stringify({ PublicIP: ip, ...(dual ? { PublicIPv6: `fd00::${c + 1}` } : {}), BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: `0a:00:00:00:00:0${c}` } });
    if (await s.compareAndSwap(key, 0, value, { ttlSeconds: FLANNEL_TTL })) stats.flannelLeases++;
  };

  for (const cmd of cmds) {
    switch (cmd.kind) {
      case 'acquire':
        await acquire(cmd.host);
        break;
      case 'renew': {
        const m = managers[cmd.host];
        if (m?.lease) {
          stats.renewals++;
          await pump(clock, m.renew(), 5).catch((err: Error) => assert.match(err.message, /is full/));
        }
        break;
      }
      case 'advance':
        await clock.advance(cmd.ms);
        break;
      case 'restartAfterTtl':
        managers[cmd.host] = undefined; // the old process is gone: nobody renews its lease
        if (cmd.newVtep) boots[cmd.host]!++;
        await clock.advance(TTL * 1000 + cmd.extraMs);
        boot(cmd.host);
        stats.restarts++;
        await acquire(cmd.host);
        break;
      case 'race':
        if (cmd.a !== cmd.b) {
          boot(cmd.a);
          boot(cmd.b);
          await Promise.all([acquire(cmd.a), acquire(cmd.b)]);
        }
        break;
      case 'flannel':
        await flannel(cmd.client, cmd.dual, cmd.pick);
        break;
    }
    const bySubnet = new Map<string, string[]>();
    for (const e of backend.peekAll(keys.subnetsPrefix)) {
      const s = parseLeaseKey(e.key.slice(keys.subnetsPrefix.length))?.subnet ?? e.key;
      bySubnet.set(s, [...(bySubnet.get(s) ?? []), e.key]);
    }
    for (const [s, ks] of bySubnet) assert.equal(ks.length, 1, `after ${JSON.stringify(cmd)}: ${s} has ${ks.length} live leases: ${ks.join(', ')}`);
    assert.deepEqual(ledger.violations, [], `after ${JSON.stringify(cmd)}`);
  }
}

test(`lease safety under random interleavings (fast-check, ${RUNS} runs, seed ${SEED})`, async (t) => {
  t.diagnostic(`fast-check seed ${SEED}, ${RUNS} runs (replay: WEFT_PROPERTY_SEED=${SEED})`);
  await fc.assert(fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 40 }), scenario), { seed: SEED, numRuns: RUNS });
  t.diagnostic(`steps: ${JSON.stringify(stats)}`);
  assert.ok(stats.acquired > RUNS && stats.flannelLeases > RUNS / 2 && stats.restarts > RUNS / 2, 'the runs exercised acquire, restarts and flannel clients');
});

test('the ledger catches an overwrite (the check can fail)', async () => {
  const backend = new MemoryBackend();
  const ledger = new Ledger();
  const a = new OwnedStore(backend, 'a', ledger);
  const b = new OwnedStore(backend, 'b', ledger);
  const k = `${networkKeys(a, NET).subnetsPrefix}10.60.1.0-24`;
  const e = await a.put(k, '{}', { ttlSeconds: 60 });
  await b.compareAndSwap(k, e.revision, '{"x":1}');
  assert.equal(ledger.violations.length, 1);
});
