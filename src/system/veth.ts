import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { WeftError } from '../util/errors.js';
import { run } from './exec.js';
import { ipBatch, listInterfaces } from './ip.js';
import { configureInterface, deleteLink, removeLink } from './links.js';
import { inNetns, netnsArg, toRef, type NetnsRef, type NsOpts } from './netns.js';
import { NetlinkError, netlinkCanReach, netlinkReady, nlCreateVeth } from './netlink.js';
import { warmIpBatch } from './warm.js';

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

function checkName(n: string, what: string): void {
  if (!IFNAME.test(n)) throw new WeftError(`invalid ${what} name "${n}" (1–15 letters, digits, _ . -)`);
}

/** A host-side interface name, ≤ 15 chars, stable and unique per (container, network): vw + 8 hex. */
export function hostIfName(container: string, network: string): string {
  return 'vw' + createHash('sha256').update(`${container}\0${network}`).digest('hex').slice(0, 8);
}

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** eth0 if free, else the first free ethwe0, ethwe1, … */
export function nextIfName(existing: readonly string[]): string {
  const taken = new Set(existing);
  if (!taken.has('eth0')) return 'eth0';
  for (let i = 0; ; i++) if (!taken.has(`ethwe${i}`)) return `ethwe${i}`;
}

/**
 * Interface names inside a namespace (to pick the next free name). For a namespace known by a PID it reads
 * /proc/PID/net/dev (that process's namespace) instead of spawning `ip`.
 */
export async function listNetnsInterfaces(ns: NetnsRef | string): Promise<string[]> {
  const r = toRef(ns);
  if ('pid' in r) {
    try {
      const text = await readFile(`/proc/${r.pid}/net/dev`, 'utf8');
      return text
        .split('\n')
        .slice(2)
        .map((l) => /^\s*([^:\s]+):/.exec(l)?.[1])
        .filter((n): n is string => !!n);
    } catch {
      /* process gone or /proc unreadable: ask ip, which reports the error */
    }
  }
  return listInterfaces({ netns: ns });
}

export interface AttachOptions {
  /** The container's namespace: a name or a PID. */
  netns: NetnsRef | string;
  /** Interface name inside the container (eth0, ethwe0, …). */
  ifname: string;
  /** Container address with prefix length, e.g. "10.5.1.2/24". */
  address: string;
  /** Gateway (the bridge address), without a prefix length; omit for no route. */
  gateway?: string;
  /** What the route via the gateway covers: "default" (the default) or a CIDR (a container's second network). */
  routeTo?: string;
  mtu: number;
  bridge: string;
  hostIf: string;
  /** MAC of the container interface; random locally administered when absent. */
  mac?: string;
  /** Namespace of the host side (the bridge) when it is not our own. */
  hostNetns?: NetnsRef | string;
}

/**
 * Creates a veth with its peer made directly inside the container namespace, enslaves the host end to
 * the bridge and configures the container end (address, MTU, default route). Two `ip -batch` processes.
 */
export async function attachVeth(o: AttachOptions): Promise<{ hostIf: string; mac: string }> {
  const made = await createVethInPlace(o);
  await configureContainerEnd({ ...o, mac: made.mac });
  return made;
}

/**
 * The first half of attachVeth: the veth, its container end (down, unaddressed) made inside the container's
 * namespace, its host end on the bridge and up. One rtnetlink request (./netlink.ts), or one `ip -batch`
 * process without the helper; nothing is left on failure.
 */
export async function createVethInPlace(o: AttachOptions): Promise<{ hostIf: string; mac: string }> {
  checkName(o.ifname, 'interface');
  checkName(o.hostIf, 'host interface');
  const mac = o.mac ?? randomMac();
  if (netlinkReady() && netlinkCanReach(o.netns, o.hostNetns)) {
    try {
      await nlCreateVeth({ hostIf: o.hostIf, ifname: o.ifname, mtu: o.mtu, mac, netns: o.netns, bridge: o.bridge, hostNetns: o.hostNetns });
    } catch (e) {
      // the kernel undoes a failed RTM_NEWLINK itself; only a helper that died unanswered may have made it
      if (!(e instanceof NetlinkError)) await deleteLink(o.hostIf, o.hostNetns).catch(() => {});
      throw e;
    }
    return { hostIf: o.hostIf, mac };
  }
  const host = [
    `link add ${o.hostIf} mtu ${o.mtu} type veth peer name ${o.ifname} mtu ${o.mtu} address ${mac} netns ${netnsArg(o.netns)}`,
    `link set ${o.hostIf} master ${o.bridge} up`,
  ];
  try {
    await warmIpBatch(host, { netns: o.hostNetns });
  } catch (e) {
    // the first line may have succeeded: do not leave half a veth behind
    await ipBatch([`link del ${o.hostIf}`], { netns: o.hostNetns, force: true }).catch(() => {});
    throw e;
  }
  return { hostIf: o.hostIf, mac };
}

/** The second half: the container end addressed, up, with its route (./links.ts); the veth is deleted on failure. */
export async function configureContainerEnd(o: AttachOptions): Promise<void> {
  try {
    await configureInterface(o);
  } catch (e) {
    await deleteLink(o.hostIf, o.hostNetns).catch(() => {});
    throw e;
  }
}

/** Deletes the host end (the container end goes with it). Returns false when it did not exist. */
export async function detachVeth(hostIf: string, opts: NsOpts = {}): Promise<boolean> {
  checkName(hostIf, 'host interface');
  return removeLink(hostIf, opts);
}

/**
 * Creates a veth pair with both ends in the host namespace, the host end on the bridge and up
 * (Docker's remote driver moves the peer into the container itself). One `ip -batch` process.
 */
export async function createVethPair(
  hostIf: string,
  peerIf: string,
  o: { bridge: string; mtu: number; mac?: string } & NsOpts,
): Promise<{ hostIf: string; peerIf: string; mac: string }> {
  checkName(hostIf, 'host interface');
  checkName(peerIf, 'peer interface');
  const mac = o.mac ?? randomMac();
  await ipBatch(
    [
      `link add ${hostIf} mtu ${o.mtu} type veth peer name ${peerIf} mtu ${o.mtu} address ${mac}`,
      `link set ${hostIf} master ${o.bridge} up`,
    ],
    { netns: o.netns },
  );
  return { hostIf, peerIf, mac };
}

/** Whether a namespace reference still exists (a named netns or a live process). */
export async function netnsAlive(ns: NetnsRef | string): Promise<boolean> {
  const [cmd, args] = inNetns(toRef(ns), 'true', []);
  return (await run(cmd, args, { allowFail: true })).code === 0;
}
