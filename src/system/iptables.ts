import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';
import { compareStrings } from '../util/compare.js';

export type Table = 'filter' | 'nat' | 'mangle' | 'raw';

/** weft's own chains; the built-in chains only get one jump each. */
export const FORWARD_CHAIN = 'WEFT-FORWARD';
export const POSTROUTING_CHAIN = 'WEFT-POSTROUTING';

async function iptables(args: readonly string[], opts: NsOpts, allowFail = false) {
  const [cmd, a] = inNetns(opts.netns, 'iptables', ['-w', '5', ...args]);
  return run(cmd, a, { allowFail });
}

/** `iptables -S CHAIN` lines of a chain, or undefined when the chain does not exist. */
export async function listChainRules(chain: string, opts: NsOpts & { table?: Table } = {}): Promise<string[] | undefined> {
  const [cmd, a] = inNetns(opts.netns, 'iptables', ['-w', '5', '-t', opts.table ?? 'filter', '-S', chain]);
  const r = await run(cmd, a, { allowFail: true, timeoutMs: 10_000 });
  if (r.code !== 0) {
    if (/No chain|does not exist/i.test(r.stderr)) return undefined;
    throw new Error(r.stderr.trim() || `iptables exited ${r.code}`);
  }
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

export async function ruleExists(table: Table, chain: string, rule: readonly string[], opts: NsOpts = {}): Promise<boolean> {
  return (await iptables(['-t', table, '-C', chain, ...rule], opts, true)).code === 0;
}

/** Creates the chain when missing. */
export async function ensureChain(table: Table, chain: string, opts: NsOpts = {}): Promise<void> {
  const r = await iptables(['-t', table, '-N', chain], opts, true);
  if (r.code !== 0 && !/exists/i.test(r.stderr)) await iptables(['-t', table, '-N', chain], opts);
}

/** Adds the rule unless `-C` finds it; `position` inserts (1 = first) instead of appending. Returns whether it added. */
export async function ensureRule(
  table: Table,
  chain: string,
  rule: readonly string[],
  opts: NsOpts & { position?: number } = {},
): Promise<boolean> {
  if (await ruleExists(table, chain, rule, opts)) return false;
  const where = opts.position ? ['-I', chain, String(opts.position)] : ['-A', chain];
  await iptables(['-t', table, ...where, ...rule], opts);
  return true;
}

/** Deletes every copy of the rule; returns how many it removed. */
export async function removeRule(table: Table, chain: string, rule: readonly string[], opts: NsOpts = {}): Promise<number> {
  let n = 0;
  while ((await iptables(['-t', table, '-D', chain, ...rule], opts, true)).code === 0) n++;
  return n;
}

function forwardRules(cidr: string): string[][] {
  return [
    ['-s', cidr, '-m', 'comment', '--comment', 'weft', '-j', 'ACCEPT'],
    ['-d', cidr, '-m', 'comment', '--comment', 'weft', '-j', 'ACCEPT'],
  ];
}

function masqRules(cidr: string): string[][] {
  return [
    ['-s', cidr, '-d', cidr, '-m', 'comment', '--comment', 'weft', '-j', 'RETURN'],
    ['-s', cidr, '!', '-d', '224.0.0.0/4', '-m', 'comment', '--comment', 'weft', '-j', 'MASQUERADE'],
  ];
}

/**
 * Whether forwarded traffic could be dropped without weft's accept rules: FORWARD's policy is not ACCEPT, or
 * FORWARD holds rules (Docker's, a firewall's, or weft's own from an earlier run). On a host where neither is
 * true weft adds nothing, so the kernel forwards exactly as on a hand-made setup — with no netfilter hook in
 * the path (measured: the two accept rules cost ~5-8% of host-gw throughput). Listing creates no table.
 */
export async function forwardNeedsAccept(opts: NsOpts = {}): Promise<boolean> {
  const lines = (await iptables(['-t', 'filter', '-S', 'FORWARD'], opts)).stdout.split('\n').filter(Boolean);
  return lines.some((l) => l.startsWith('-A ')) || !lines.includes('-P FORWARD ACCEPT');
}

/**
 * Accepts forwarded traffic from and to the network CIDR (both directions) via the WEFT-FORWARD chain,
 * jumped to first from `parents` (default FORWARD; add DOCKER-USER where Docker runs).
 */
export async function ensureForwardAccept(cidr: string, opts: NsOpts & { parents?: string[] } = {}): Promise<void> {
  await ensureChain('filter', FORWARD_CHAIN, opts);
  for (const parent of opts.parents ?? ['FORWARD']) await ensureRule('filter', parent, ['-j', FORWARD_CHAIN], { ...opts, position: 1 });
  for (const r of forwardRules(cidr)) await ensureRule('filter', FORWARD_CHAIN, r, opts);
}

/** Masquerades traffic from the network to anywhere outside it (not within the network, not multicast). */
export async function ensureMasquerade(cidr: string, opts: NsOpts = {}): Promise<void> {
  await ensureChain('nat', POSTROUTING_CHAIN, opts);
  await ensureRule('nat', 'POSTROUTING', ['-j', POSTROUTING_CHAIN], { ...opts, position: 1 });
  const [ret, masq] = masqRules(cidr);
  // RETURN must precede MASQUERADE: insert it at the top, append the other.
  await ensureRule('nat', POSTROUTING_CHAIN, ret!, { ...opts, position: 1 });
  await ensureRule('nat', POSTROUTING_CHAIN, masq!, opts);
}

/** Comment of the rules that keep traffic between two weft networks from being masqueraded. */
const INTERNAL_COMMENT = 'weft-internal';
let exemptQueue: Promise<unknown> = Promise.resolve();

/**
 * Traffic from one weft network to another is not masqueraded (it is not egress: the other network sees
 * the container's own address, and a backend whose gateway address is shared by every host, l2, would
 * otherwise get the answer on the wrong host). A RETURN rule per ordered pair of the networks' CIDRs at the
 * top of WEFT-POSTROUTING, made only where that chain exists (some network masquerades here); rules of
 * pairs no longer wanted are removed. Whether the networks are connected does not matter: the isolation
 * chain drops what is not allowed before it gets here. Calls are serialised; `weft reset` flushes the chain.
 */
export function reconcileMasqExemptions(cidrs: readonly string[], opts: NsOpts = {}): Promise<void> {
  const run = exemptQueue.catch(() => undefined).then(() => reconcileMasqExemptionsNow(cidrs, opts));
  exemptQueue = run;
  return run;
}

async function reconcileMasqExemptionsNow(cidrs: readonly string[], opts: NsOpts): Promise<void> {
  const listed = await iptables(['-t', 'nat', '-S', POSTROUTING_CHAIN], opts, true);
  if (listed.code !== 0) return; // nothing is masqueraded here
  const want = cidrs.flatMap((a) => cidrs.filter((b) => b !== a).map((b) => ['-s', a, '-d', b, '-m', 'comment', '--comment', INTERNAL_COMMENT, '-j', 'RETURN']));
  const wantText = new Set(want.map((r) => ruleText(POSTROUTING_CHAIN, r)));
  const have = listed.stdout.split('\n').filter((l) => l.startsWith(`-A ${POSTROUTING_CHAIN} `) && l.includes(`--comment ${INTERNAL_COMMENT}`));
  for (const line of have) if (!wantText.has(line)) await removeRule('nat', POSTROUTING_CHAIN, line.split(' ').slice(2), opts);
  for (const r of want) if (!have.includes(ruleText(POSTROUTING_CHAIN, r))) await iptables(['-t', 'nat', '-I', POSTROUTING_CHAIN, '1', ...r], opts);
}

export async function removeForwardAccept(cidr: string, opts: NsOpts = {}): Promise<void> {
  for (const r of forwardRules(cidr)) await removeRule('filter', FORWARD_CHAIN, r, opts);
}

export async function removeMasquerade(cidr: string, opts: NsOpts = {}): Promise<void> {
  for (const r of masqRules(cidr)) await removeRule('nat', POSTROUTING_CHAIN, r, opts);
}

/** Removes weft's chains and the jumps to them (`weft reset`). */
export async function removeAllWeftRules(opts: NsOpts & { parents?: string[] } = {}): Promise<void> {
  await removeIsolation(opts);
  await removeDnat(opts); // published ports (Docker -p)
  for (const parent of opts.parents ?? ['FORWARD', 'DOCKER-USER']) await removeRule('filter', parent, ['-j', FORWARD_CHAIN], opts);
  await removeRule('nat', 'POSTROUTING', ['-j', POSTROUTING_CHAIN], opts);
  for (const [t, c] of [['filter', FORWARD_CHAIN], ['nat', POSTROUTING_CHAIN]] as const) {
    await iptables(['-t', t, '-F', c], opts, true);
    await iptables(['-t', t, '-X', c], opts, true);
  }
}

// ---------------- isolation between networks ----------------

/** Holds the drops between weft networks; jumped to first from FORWARD (and DOCKER-USER). */
export const ISOLATION_CHAIN = 'WEFT-ISOLATION';

export interface IsolatedNetwork {
  name: string;
  /** The whole network, e.g. "10.5.0.0/16". */
  cidr: string;
}

/**
 * The isolation rules (pure): for every ordered pair of networks the user has not connected, packets from
 * one to the other are rejected. One rule per direction, matched on the whole networks, so the same chain
 * is right on every host whichever networks it runs, for every backend (routed on this host, arriving from
 * an underlay, or from containers sitting on a physical segment). With fewer than two networks: no rule.
 * `connected` holds "a+b" with the names sorted.
 */
export function isolationRules(networks: readonly IsolatedNetwork[], connected: ReadonlySet<string>): string[][] {
  const out: string[][] = [];
  const sorted = [...networks].sort((a, b) => compareStrings(a.name, b.name));
  for (const a of sorted) {
    for (const b of sorted) {
      if (a === b || connected.has([a.name, b.name].sort().join('+'))) continue;
      out.push(['-s', a.cidr, '-d', b.cidr, '-m', 'comment', '--comment', `weft: ${a.name} -/-> ${b.name}`, '-j', 'REJECT', '--reject-with', 'icmp-admin-prohibited']);
    }
  }
  return out;
}

/** `iptables -S` text of a rule in our chain (what `-S` prints back), for comparing with the kernel. */
function ruleText(chain: string, rule: readonly string[]): string {
  return ['-A', chain, ...rule.map((a) => (/[\s>]/.test(a) ? `"${a}"` : a))].join(' ');
}

let isolationQueue: Promise<unknown> = Promise.resolve();

/**
 * Makes WEFT-ISOLATION hold exactly `rules` (isolationRules) and be the first rule of each parent chain.
 * With no rules (fewer than two networks) the chain and its jumps are removed: a host with one network keeps
 * a netfilter-free forwarding path (see forwardNeedsAccept). The chain is rewritten atomically with
 * iptables-restore only when it differs. Calls are serialised (every network's runner calls it).
 */
export function reconcileIsolation(rules: readonly string[][], opts: NsOpts & { parents?: string[] } = {}): Promise<{ changed: boolean }> {
  const run = isolationQueue.catch(() => undefined).then(() => reconcileIsolationNow(rules, opts));
  isolationQueue = run;
  return run;
}

async function reconcileIsolationNow(rules: readonly string[][], opts: NsOpts & { parents?: string[] }): Promise<{ changed: boolean }> {
  const parents = opts.parents ?? ['FORWARD'];
  const listed = await iptables(['-t', 'filter', '-S', ISOLATION_CHAIN], opts, true);
  const exists = listed.code === 0;
  if (rules.length === 0) {
    if (!exists) return { changed: false };
    await removeIsolation(opts);
    return { changed: true };
  }
  const have = listed.stdout.split('\n').filter((l) => l.startsWith('-A '));
  const want = rules.map((r) => ruleText(ISOLATION_CHAIN, r));
  let changed = false;
  if (!exists || have.join('\n') !== want.join('\n')) {
    const text = ['*filter', `:${ISOLATION_CHAIN} - [0:0]`, `-F ${ISOLATION_CHAIN}`, ...want, 'COMMIT', ''].join('\n');
    const [cmd, a] = inNetns(opts.netns, 'iptables-restore', ['-w', '5', '--noflush']);
    await run(cmd, a, { input: text });
    changed = true;
  }
  for (const parent of parents) {
    const chain = await iptables(['-t', 'filter', '-S', parent], opts, true);
    if (chain.code !== 0) continue; // DOCKER-USER where Docker does not run
    const first = chain.stdout.split('\n').find((l) => l.startsWith('-A '));
    if (first === `-A ${parent} -j ${ISOLATION_CHAIN}`) continue;
    await removeRule('filter', parent, ['-j', ISOLATION_CHAIN], opts);
    await iptables(['-t', 'filter', '-I', parent, '1', '-j', ISOLATION_CHAIN], opts);
    changed = true;
  }
  return { changed };
}

/** Removes the isolation chain and the jumps to it. */
export async function removeIsolation(opts: NsOpts & { parents?: string[] } = {}): Promise<void> {
  for (const parent of opts.parents ?? ['FORWARD', 'DOCKER-USER']) await removeRule('filter', parent, ['-j', ISOLATION_CHAIN], opts);
  await iptables(['-t', 'filter', '-F', ISOLATION_CHAIN], opts, true);
  await iptables(['-t', 'filter', '-X', ISOLATION_CHAIN], opts, true);
}

// ---------------- published ports (Docker -p) ----------------

/** nat chain of DNAT rules for published ports, jumped from PREROUTING and (local traffic) OUTPUT. */
export const DNAT_CHAIN = 'WEFT-DNAT';
/** nat chain that masquerades hairpin traffic (a container of the network reaching a port published on its own host). */
export const DNAT_HAIRPIN_CHAIN = 'WEFT-DNAT-HAIRPIN';

export interface PortRule {
  proto: 'tcp' | 'udp' | 'sctp';
  /** Host address to match (absent: any local address). */
  hostIp?: string;
  hostPort: number;
  /** Container address (no prefix length) and port. */
  ip: string;
  port: number;
  /** The whole network of the container: its members reaching the host port are masqueraded (hairpin). */
  networkCidr?: string;
  /** Who the rule is for (endpoint id): a comment on the rule. */
  owner: string;
}

/** The jumps into the chains: [table chain, rule], each inserted first. */
const DNAT_JUMPS: Array<[string, string[]]> = [
  ['PREROUTING', ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', DNAT_CHAIN]],
  // local clients (the host itself) reaching its own address; 127.0.0.0/8 would need route_localnet
  ['OUTPUT', ['!', '-d', '127.0.0.0/8', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', DNAT_CHAIN]],
  ['POSTROUTING', ['-j', DNAT_HAIRPIN_CHAIN]],
];

/** The two chains' rules (pure), in iptables-restore form. */
export function dnatRuleLines(rules: readonly PortRule[]): string[] {
  const out: string[] = [];
  for (const r of rules) {
    out.push(['-A', DNAT_CHAIN, ...(r.hostIp ? ['-d', `${r.hostIp}/32`] : []), '-p', r.proto, '-m', r.proto, '--dport', String(r.hostPort), ...comment(r), '-j', 'DNAT', '--to-destination', `${r.ip}:${r.port}`].join(' '));
  }
  for (const r of rules) {
    const src = r.networkCidr ?? `${r.ip}/32`;
    out.push(['-A', DNAT_HAIRPIN_CHAIN, '-s', src, '-d', `${r.ip}/32`, '-p', r.proto, '-m', r.proto, '--dport', String(r.port), '-m', 'conntrack', '--ctstate', 'DNAT', ...comment(r), '-j', 'MASQUERADE'].join(' '));
  }
  return out;
  function comment(r: PortRule) {
    return ['-m', 'comment', '--comment', `"weft: ${r.owner.replace(/[^0-9A-Za-z:._-]/g, '')}"`];
  }
}

let dnatQueue: Promise<unknown> = Promise.resolve();

/**
 * Makes WEFT-DNAT and WEFT-DNAT-HAIRPIN hold exactly `rules` (both rewritten atomically with iptables-restore)
 * and jumped to first. With no rules, the chains and jumps are removed. Serialised.
 */
export function reconcileDnat(rules: readonly PortRule[], opts: NsOpts = {}): Promise<void> {
  const run = dnatQueue.catch(() => undefined).then(() => reconcileDnatNow(rules, opts));
  dnatQueue = run;
  return run;
}

async function reconcileDnatNow(rules: readonly PortRule[], opts: NsOpts): Promise<void> {
  if (rules.length === 0) return removeDnat(opts);
  const text = ['*nat', `:${DNAT_CHAIN} - [0:0]`, `:${DNAT_HAIRPIN_CHAIN} - [0:0]`, `-F ${DNAT_CHAIN}`, `-F ${DNAT_HAIRPIN_CHAIN}`, ...dnatRuleLines(rules), 'COMMIT', ''].join('\n');
  const [cmd, a] = inNetns(opts.netns, 'iptables-restore', ['-w', '5', '--noflush']);
  await run(cmd, a, { input: text });
  for (const [parent, jump] of DNAT_JUMPS) await ensureRule('nat', parent, jump, { ...opts, position: 1 });
}

/** Removes the published-port chains and the jumps to them (no rules left, `weft reset`). */
export async function removeDnat(opts: NsOpts = {}): Promise<void> {
  for (const [parent, jump] of DNAT_JUMPS) await removeRule('nat', parent, jump, opts);
  for (const c of [DNAT_CHAIN, DNAT_HAIRPIN_CHAIN]) {
    await iptables(['-t', 'nat', '-F', c], opts, true);
    await iptables(['-t', 'nat', '-X', c], opts, true);
  }
}
