import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';
import { warmEbtablesRestore } from './warm.js';

/**
 * A container's packets carry only the address and MAC weft gave it. Frames entering the host bridge from
 * a container's port (the veth's host end) are dropped by ebtables when their source MAC, IPv4 source or
 * ARP sender is not the endpoint's, and IPv6 from containers is dropped (weft assigns none). One chain,
 * WEFT-ANTISPOOF, is jumped to from the bridge's INPUT (frames to the gateway, routed on) and FORWARD
 * (frames to another port of the bridge); it holds one rule per port, `-i PORT -j WEFT-AS-PORT`, and the
 * port's own chain WEFT-AS-PORT holds that port's rules. Binding declares the port's chain (which creates
 * it, or flushes it when it exists) and refills it in one ebtables-restore block, so binding again never
 * leaves an older set of rules behind; unbinding empties the chain and deletes its jump and the chain in one
 * block, with no listing. Rules match on the port's name, so they can be put in place before the port exists.
 */

export const ANTISPOOF_CHAIN = 'WEFT-ANTISPOOF';
const PORT_CHAIN_PREFIX = 'WEFT-AS-';

export interface SourceBinding {
  /** The container port on the bridge (the veth's host end). */
  hostIf: string;
  /** The container's address, without prefix length. */
  ip: string;
  /** Absent: the MAC is not pinned (a CNI chain may change it); the address always is. */
  mac?: string;
}

/** The chain holding one port's rules (an ebtables chain name may have 31 characters; a port name has ≤ 15). */
export function portChain(hostIf: string): string {
  return `${PORT_CHAIN_PREFIX}${hostIf}`;
}

/** The port's rules, inside its chain (the jump to the chain already matched the port). */
function rulesFor(b: SourceBinding): string[] {
  return [
    ...(b.mac ? [`-s ! ${b.mac} -j DROP`] : []),
    `-p IPv4 --ip-src ! ${b.ip} -j DROP`,
    `-p ARP --arp-ip-src ! ${b.ip} -j DROP`,
    ...(b.mac ? [`-p ARP --arp-mac-src ! ${b.mac} -j DROP`] : []),
    `-p IPv6 -j DROP`,
  ];
}

const jumpRule = (hostIf: string) => `-i ${hostIf} -j ${portChain(hostIf)}`;

/** Lines that (re)make a port's chain holding exactly its rules, and the jump to it. */
function bindLines(b: SourceBinding): string[] {
  const chain = portChain(b.hostIf);
  return [`:${chain} RETURN`, ...rulesFor(b).map((r) => `-A ${chain} ${r}`), `-A ${ANTISPOOF_CHAIN} ${jumpRule(b.hostIf)}`];
}

async function ebtables(args: string[], sys: NsOpts, allowFail = false) {
  const [cmd, a] = inNetns(sys.netns, 'ebtables', args);
  return run(cmd, a, { allowFail });
}

async function restore(lines: string[], sys: NsOpts): Promise<void> {
  if (!lines.length) return;
  // through the command runner (./warm.ts): this is on every attach's critical path
  await warmEbtablesRestore(`*filter\n${lines.join('\n')}\nCOMMIT\n`, inNetns(sys.netns, 'ebtables-restore', ['--noflush']));
}

/**
 * Per namespace (by key) where the chain and its jumps are known to exist in this process: the ports that
 * have a jump to their chain (from the listing at first use, then kept up to date by bind and unbind). A
 * bind of a port already there deletes its jump before adding it again, so a port never has two; should the
 * kernel differ from this (rules changed by hand), the block fails whole and the port is repaired from a listing.
 */
const ready = new Map<string, Set<string>>();
const nsKey = (sys: NsOpts) => JSON.stringify(sys.netns ?? null);

/** Per namespace, a chain check under way: concurrent callers share it (see ensureAntispoofChain). */
const ensuring = new Map<string, Promise<void>>();

/**
 * Creates the chain and its two jumps where missing (declaring an existing chain would flush it). One check
 * at a time per namespace: two that both found the chain missing would each declare it (the second flushing
 * the jump a first bind had put there meanwhile) and each add the jumps from INPUT and FORWARD.
 */
export function ensureAntispoofChain(sys: NsOpts = {}): Promise<void> {
  const k = nsKey(sys);
  let p = ensuring.get(k);
  if (!p) {
    p = ensureChainNow(sys).finally(() => ensuring.delete(k));
    ensuring.set(k, p);
  }
  return p;
}

async function ensureChainNow(sys: NsOpts): Promise<void> {
  const listed = await ebtables(['-L'], sys);
  const lines: string[] = [];
  if (!listed.stdout.includes(`Bridge chain: ${ANTISPOOF_CHAIN},`)) lines.push(`:${ANTISPOOF_CHAIN} RETURN`);
  for (const parent of ['INPUT', 'FORWARD']) {
    const section = listed.stdout.split(/\n(?=Bridge chain: )/).find((s) => s.startsWith(`Bridge chain: ${parent},`)) ?? '';
    if (!section.split('\n').some((l) => l.trim() === `-j ${ANTISPOOF_CHAIN}`)) lines.push(`-I ${parent} 1 -j ${ANTISPOOF_CHAIN}`);
  }
  await restore(lines, sys);
  const jumped = new Set<string>();
  for (const [port, r] of parseRules(listed.stdout)) if (r.top.includes(jumpRule(port))) jumped.add(port);
  ready.set(nsKey(sys), jumped);
}

/** What the kernel holds for one port. */
interface PortRules {
  /** WEFT-ANTISPOOF's rules that match the port: its jump (more than one after a repeated bind), or an older weft's rules. */
  top: string[];
  /** The rules in the port's chain; undefined when there is no such chain. */
  own?: string[];
}

/** Every port's rules, from one `ebtables -L` (start-up, resync and the rare repair only: never the usual attach or detach). */
async function currentRules(sys: NsOpts): Promise<Map<string, PortRules>> {
  const r = await ebtables(['-L'], sys, true);
  return r.code === 0 ? parseRules(r.stdout) : new Map();
}

function parseRules(listing: string): Map<string, PortRules> {
  const out = new Map<string, PortRules>();
  const get = (port: string): PortRules => {
    let p = out.get(port);
    if (!p) out.set(port, (p = { top: [] }));
    return p;
  };
  for (const section of listing.split(/\n(?=Bridge chain: )/)) {
    const name = /^Bridge chain: ([^,]+),/.exec(section)?.[1];
    if (!name) continue;
    const rules = section
      .split('\n')
      .slice(1)
      .map((l) => l.trim())
      .filter((l) => l.includes('-j '));
    if (name === ANTISPOOF_CHAIN) {
      for (const line of rules) {
        const m = / -i (\S+)/.exec(` ${line}`);
        if (m) get(m[1]!).top.push(line);
      }
    } else if (name.startsWith(PORT_CHAIN_PREFIX)) get(name.slice(PORT_CHAIN_PREFIX.length)).own = rules;
  }
  return out;
}

/**
 * Puts a port's rules in place (before the port is created): one ebtables-restore block once the chain
 * exists. Binding a port again replaces its rules (a second jump to the same chain is harmless and goes at
 * unbind or the next reconcile).
 */
export async function bindSource(b: SourceBinding, sys: NsOpts = {}): Promise<void> {
  if (!ready.has(nsKey(sys)) || ensuring.has(nsKey(sys))) await ensureAntispoofChain(sys);
  const jumped = ready.get(nsKey(sys))!;
  try {
    await restore([...(jumped.has(b.hostIf) ? [`-D ${ANTISPOOF_CHAIN} ${jumpRule(b.hostIf)}`] : []), ...bindLines(b)], sys);
  } catch {
    // the kernel is not as this process knows it: look, and make the port right in one block
    const have = (await currentRules(sys)).get(b.hostIf);
    await restore([...(have?.top ?? []).map((r) => `-D ${ANTISPOOF_CHAIN} ${r}`), ...bindLines(b)], sys);
  }
  jumped.add(b.hostIf);
}

/**
 * Removes every rule of a port: one block that empties its chain and deletes its jump and the chain. When
 * that block does not fit what is there (no such chain or jump; a second jump; an older weft's rules), the
 * block changes nothing (it commits whole or not at all) and the port's rules are listed and removed.
 */
export async function unbindSource(hostIf: string, sys: NsOpts = {}): Promise<void> {
  const chain = portChain(hostIf);
  // Known not bound (Docker's prepare, a failed join): nothing to do. Should a chain be there all the same
  // (made by another process), it holds no jump of this process's making, and a later bind of the port
  // refills it before adding its jump, so it never filters by an older binding.
  if (ready.get(nsKey(sys))?.has(hostIf) === false) return;
  try {
    await restore([`:${chain} RETURN`, `-D ${ANTISPOOF_CHAIN} ${jumpRule(hostIf)}`, `-X ${chain}`], sys);
  } catch {
    // not the usual shape: look
    const have = (await currentRules(sys)).get(hostIf);
    if (have) await restore(unbindLines(hostIf, have), sys);
  }
  ready.get(nsKey(sys))?.delete(hostIf);
}

function unbindLines(hostIf: string, have: PortRules): string[] {
  const chain = portChain(hostIf);
  return [...(have.own ? [`:${chain} RETURN`] : []), ...have.top.map((r) => `-D ${ANTISPOOF_CHAIN} ${r}`), ...(have.own ? [`-X ${chain}`] : [])];
}

/** A listed rule against one weft writes (ebtables lists its own spelling: compare the addresses and the match). */
function sameRule(listed: string, want: string): boolean {
  const l = listed.replace(/\s+/g, ' ').toLowerCase();
  const w = want.toLowerCase();
  const addrs = w.match(/(?:[0-9a-f]{2}:){5}[0-9a-f]{2}|\d+\.\d+\.\d+\.\d+/g) ?? [];
  const proto = /-p (\S+)/.exec(w)?.[1];
  return addrs.every((a) => l.includes(a)) && (proto === undefined ? !/-p /.test(l) : l.includes(`-p ${proto}`)) && l.endsWith('-j drop');
}

/**
 * Makes the kernel hold exactly the bindings `wanted` gives for the ports `owns` selects (other ports' rules,
 * e.g. another adapter's, are left alone); ports `busy` names are not touched. Returns the ports it changed.
 *
 * The kernel is listed before `wanted` is asked and `busy` after that, so a port bound by an attach running
 * beside this one is never taken for a stray: its rules are either not in the listing, or its record is in
 * `wanted`, or it is still busy (the caller's attach under way).
 */
export async function reconcileSources(
  wanted: () => Promise<SourceBinding[]>,
  owns: (hostIf: string) => boolean,
  busy: (hostIf: string) => boolean = () => false,
  sys: NsOpts = {},
): Promise<string[]> {
  await ensureAntispoofChain(sys);
  const have = await currentRules(sys);
  const bindings = (await wanted()).filter((b) => !busy(b.hostIf));
  for (const hostIf of [...have.keys()]) if (busy(hostIf)) have.delete(hostIf);
  const want = new Map(bindings.map((b) => [b.hostIf, b]));
  const lines: string[] = [];
  const changed: string[] = [];
  for (const [hostIf, rules] of have) {
    const b = want.get(hostIf);
    if (b) {
      const wantRules = rulesFor(b);
      const right =
        rules.top.length === 1 &&
        rules.top[0] === jumpRule(hostIf) &&
        rules.own !== undefined &&
        rules.own.length === wantRules.length &&
        wantRules.every((w, k) => sameRule(rules.own![k]!, w));
      if (right) continue;
      // the whole port in one go: its jumps and older rules out, its chain refilled, one jump back
      lines.push(...rules.top.map((r) => `-D ${ANTISPOOF_CHAIN} ${r}`), ...bindLines(b));
      changed.push(hostIf);
    } else if (owns(hostIf)) {
      lines.push(...unbindLines(hostIf, rules));
      changed.push(hostIf);
    }
  }
  for (const b of bindings) {
    if (have.has(b.hostIf)) continue;
    lines.push(...bindLines(b));
    changed.push(b.hostIf);
  }
  await restore(lines, sys);
  const jumped = ready.get(nsKey(sys))!;
  for (const [hostIf, rules] of have) if (rules.top.includes(jumpRule(hostIf))) jumped.add(hostIf);
  for (const hostIf of changed) {
    if (want.has(hostIf)) jumped.add(hostIf);
    else jumped.delete(hostIf);
  }
  return changed;
}

/** Removes the chains and their jumps (`weft reset`). */
export async function removeAntispoof(sys: NsOpts = {}): Promise<void> {
  for (const parent of ['INPUT', 'FORWARD']) while ((await ebtables(['-D', parent, '-j', ANTISPOOF_CHAIN], sys, true)).code === 0);
  const ports = [...(await currentRules(sys)).keys()];
  await ebtables(['-F', ANTISPOOF_CHAIN], sys, true);
  await ebtables(['-X', ANTISPOOF_CHAIN], sys, true);
  for (const p of ports) {
    await ebtables(['-F', portChain(p)], sys, true);
    await ebtables(['-X', portChain(p)], sys, true);
  }
  ready.delete(nsKey(sys));
}
