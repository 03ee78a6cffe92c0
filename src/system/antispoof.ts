import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';
import { warmEbtablesRestore } from './warm.js';

/**
 * A container's packets carry only the address and MAC weft gave it. Frames entering the host bridge from
 * a container's port (the veth's host end) are dropped by ebtables when their source MAC, IPv4 source or
 * ARP sender is not the endpoint's, and IPv6 from containers is dropped (weft assigns none). The rules sit
 * in one chain, WEFT-ANTISPOOF, jumped to from the bridge's INPUT (frames to the gateway, routed on) and
 * FORWARD (frames to another port of the bridge). All rules of a port match on its name, so they can be
 * put in place before the port exists.
 */

export const ANTISPOOF_CHAIN = 'WEFT-ANTISPOOF';

export interface SourceBinding {
  /** The container port on the bridge (the veth's host end). */
  hostIf: string;
  /** The container's address, without prefix length. */
  ip: string;
  /** Absent: the MAC is not pinned (a CNI chain may change it); the address always is. */
  mac?: string;
}

function rulesFor(b: SourceBinding): string[] {
  const i = `-i ${b.hostIf}`;
  return [
    ...(b.mac ? [`${i} -s ! ${b.mac} -j DROP`] : []),
    `-p IPv4 ${i} --ip-src ! ${b.ip} -j DROP`,
    `-p ARP ${i} --arp-ip-src ! ${b.ip} -j DROP`,
    ...(b.mac ? [`-p ARP ${i} --arp-mac-src ! ${b.mac} -j DROP`] : []),
    `-p IPv6 ${i} -j DROP`,
  ];
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

/** Namespaces (by key) where the chain and its jumps are known to exist in this process. */
const ready = new Set<string>();
const nsKey = (sys: NsOpts) => JSON.stringify(sys.netns ?? null);

/** Creates the chain and its two jumps where missing (declaring an existing chain would flush it). */
export async function ensureAntispoofChain(sys: NsOpts = {}): Promise<void> {
  const listed = await ebtables(['-L'], sys);
  const lines: string[] = [];
  if (!listed.stdout.includes(`Bridge chain: ${ANTISPOOF_CHAIN},`)) lines.push(`:${ANTISPOOF_CHAIN} RETURN`);
  for (const parent of ['INPUT', 'FORWARD']) {
    const section = listed.stdout.split(/\n(?=Bridge chain: )/).find((s) => s.startsWith(`Bridge chain: ${parent},`)) ?? '';
    if (!section.split('\n').some((l) => l.trim() === `-j ${ANTISPOOF_CHAIN}`)) lines.push(`-I ${parent} 1 -j ${ANTISPOOF_CHAIN}`);
  }
  await restore(lines, sys);
  ready.add(nsKey(sys));
}

/** The chain's rules, grouped by the port they match. */
async function currentRules(sys: NsOpts): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const r = await ebtables(['-L', ANTISPOOF_CHAIN], sys, true);
  if (r.code !== 0) return out;
  for (const line of r.stdout.split('\n')) {
    const m = / -i (\S+)/.exec(` ${line.trim()}`);
    if (!m || !line.includes('-j')) continue;
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), line.trim()]);
  }
  return out;
}

/** Puts a port's rules in place (before the port is created). One process once the chain exists. */
export async function bindSource(b: SourceBinding, sys: NsOpts = {}): Promise<void> {
  if (!ready.has(nsKey(sys))) await ensureAntispoofChain(sys);
  await restore(rulesFor(b).map((r) => `-A ${ANTISPOOF_CHAIN} ${r}`), sys);
}

/** Removes every rule of a port. */
export async function unbindSource(hostIf: string, sys: NsOpts = {}): Promise<void> {
  const have = (await currentRules(sys)).get(hostIf) ?? [];
  await restore(have.map((r) => `-D ${ANTISPOOF_CHAIN} ${r}`), sys);
}

/**
 * Makes the chain hold exactly `bindings` for the ports `owns` selects (other ports' rules, e.g. another
 * adapter's, are left alone). Returns the ports it changed.
 */
export async function reconcileSources(bindings: SourceBinding[], owns: (hostIf: string) => boolean, sys: NsOpts = {}): Promise<string[]> {
  await ensureAntispoofChain(sys);
  const have = await currentRules(sys);
  const want = new Map(bindings.map((b) => [b.hostIf, b]));
  const lines: string[] = [];
  const changed: string[] = [];
  for (const [hostIf, rules] of have) {
    const b = want.get(hostIf);
    const right = b && rules.length === rulesFor(b).length && rules.every((r) => (b.mac !== undefined && r.includes(b.mac)) || r.includes(b.ip) || r.includes('IPv6'));
    if (owns(hostIf) && !right) {
      lines.push(...rules.map((r) => `-D ${ANTISPOOF_CHAIN} ${r}`));
      changed.push(hostIf);
    }
  }
  for (const b of bindings) {
    const rules = have.get(b.hostIf);
    if (!rules || changed.includes(b.hostIf)) {
      lines.push(...rulesFor(b).map((r) => `-A ${ANTISPOOF_CHAIN} ${r}`));
      if (!changed.includes(b.hostIf)) changed.push(b.hostIf);
    }
  }
  await restore(lines, sys);
  return changed;
}

/** Removes the chain and its jumps (`weft reset`). */
export async function removeAntispoof(sys: NsOpts = {}): Promise<void> {
  for (const parent of ['INPUT', 'FORWARD']) while ((await ebtables(['-D', parent, '-j', ANTISPOOF_CHAIN], sys, true)).code === 0);
  await ebtables(['-F', ANTISPOOF_CHAIN], sys, true);
  await ebtables(['-X', ANTISPOOF_CHAIN], sys, true);
  ready.delete(nsKey(sys));
}
