import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';

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

export async function removeForwardAccept(cidr: string, opts: NsOpts = {}): Promise<void> {
  for (const r of forwardRules(cidr)) await removeRule('filter', FORWARD_CHAIN, r, opts);
}

export async function removeMasquerade(cidr: string, opts: NsOpts = {}): Promise<void> {
  for (const r of masqRules(cidr)) await removeRule('nat', POSTROUTING_CHAIN, r, opts);
}

/** Removes weft's chains and the jumps to them (`weft reset`). */
export async function removeAllWeftRules(opts: NsOpts & { parents?: string[] } = {}): Promise<void> {
  for (const parent of opts.parents ?? ['FORWARD', 'DOCKER-USER']) await removeRule('filter', parent, ['-j', FORWARD_CHAIN], opts);
  await removeRule('nat', 'POSTROUTING', ['-j', POSTROUTING_CHAIN], opts);
  for (const [t, c] of [['filter', FORWARD_CHAIN], ['nat', POSTROUTING_CHAIN]] as const) {
    await iptables(['-t', t, '-F', c], opts, true);
    await iptables(['-t', t, '-X', c], opts, true);
  }
}
