import { parseCidrLoose } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';
import { getLink, ipBatch, ipJson } from './ip.js';
import type { NsOpts } from './netns.js';

export interface EnsureResult {
  created: boolean;
  /** The `ip` lines it ran to fix the state (empty when it was already right). */
  changes: string[];
}

/**
 * Makes bridge `name` exist, up, with exactly `gatewayCidr` as its IPv4 address and MTU `mtu`.
 * Reads the state first and changes only what differs: a correct bridge is not touched.
 */
export async function ensureBridge(name: string, gatewayCidr: string, mtu: number, opts: NsOpts = {}): Promise<EnsureResult> {
  if (name.length > 15) throw new WeftError(`bridge name ${name} is longer than 15 characters`);
  const gw = parseCidrLoose(gatewayCidr);
  if (!gw) throw new WeftError(`invalid bridge address "${gatewayCidr}"`);
  const link = await getLink(name, opts);
  if (link && link.linkinfo?.info_kind !== 'bridge') throw new WeftError(`${name} exists and is not a bridge (${link.linkinfo?.info_kind ?? 'unknown'})`);
  const lines: string[] = [];
  // A fixed MAC: a bridge without one takes its lowest port's, so a container leaving changes the gateway's
  // MAC and its neighbours lose the gateway (and weft's DNS on it) until their ARP entry goes stale.
  if (!link) lines.push(`link add ${name} address ${gatewayMac(gatewayCidr)} mtu ${mtu} type bridge`);
  else if (link.mtu !== mtu) lines.push(`link set ${name} mtu ${mtu}`);
  const want = `${gatewayCidr.split('/')[0]}/${gw.len}`;
  const have = (link?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  for (const a of have) if (a !== want) lines.push(`addr del ${a} dev ${name}`);
  if (!have.includes(want)) lines.push(`addr add ${want} dev ${name}`);
  if (!link || !link.flags?.includes('UP')) lines.push(`link set ${name} up`);
  await ipBatch(lines, opts);
  return { created: !link, changes: lines };
}

/** 02:42 + the gateway's four octets (the scheme of containers' MACs, see macForAddress; no container has the gateway's address). */
function gatewayMac(gatewayCidr: string): string {
  return ['02', '42', ...gatewayCidr.split('/')[0]!.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/** Deletes the bridge; false when it did not exist. */
export async function removeBridge(name: string, opts: NsOpts = {}): Promise<boolean> {
  if (!(await getLink(name, opts))) return false;
  await ipBatch([`link del ${name}`], opts);
  return true;
}


/** Moves every port of bridge `from` onto `to` (one `ip -batch`) and deletes `from`. */
export async function movePorts(from: string, to: string, opts: NsOpts = {}): Promise<string[]> {
  const ports = (await ipJson<Array<{ ifname: string; master?: string }>>(['link', 'show', 'master', from], opts).catch(() => [])).map((l) => l.ifname);
  await ipBatch([...ports.map((p) => `link set ${p} master ${to}`), `link del ${from}`], { ...opts, force: true }).catch(() => undefined);
  return ports;
}
