import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';
import { ipJson } from './ip.js';
import { NetlinkError, netlinkReady, nlEcho } from './netlink.js';
import type { RouteFact } from './ops.js';

/** The raw socket was refused (no CAP_NET_RAW): every later ping of this process runs `ping`. */
let echoRefused = false;

/**
 * One ping from this host (or `netns`) with a 2 s wait: whether it was answered. From this host's own
 * namespace through the weft-netlink helper (./netlink.ts) when it can: a `ping` process costs the agent a
 * fork of itself (its page tables, then copy-on-write faults) and the process's own start, ~5–10 ms of CPU
 * per ping, which was the larger part of an idle agent's probe rounds (issue 15).
 */
export async function pingOnce(target: string, sys: NsOpts = {}): Promise<boolean> {
  if (sys.netns === undefined && !echoRefused && netlinkReady()) {
    try {
      return await nlEcho(target, 2000);
    } catch (err) {
      // could not be sent (no raw socket, malformed address, the helper died): the ping command decides
      if (err instanceof NetlinkError && (err.code === 'EPERM' || err.code === 'EACCES')) echoRefused = true;
    }
  }
  const [cmd, args] = inNetns(sys.netns, 'ping', ['-n', '-q', '-c', '1', '-W', '2', target]);
  return (await run(cmd, args, { allowFail: true, timeoutMs: 5000 }).catch(() => ({ code: 1 }))).code === 0;
}

/** How the kernel routes to `target` (`ip route get`). */
export async function routeGet(target: string, sys: NsOpts = {}): Promise<RouteFact | undefined> {
  return (await ipJson<RouteFact[]>(['-4', 'route', 'get', target], sys))[0];
}

/**
 * One ping with Don't Fragment set and `size` bytes of payload (`ping -M do -s`): whether it was answered.
 * A path whose MTU is below size + 28 drops it (or answers "message too long").
 */
export async function pingDf(target: string, size: number, sys: NsOpts = {}): Promise<boolean> {
  const [cmd, args] = inNetns(sys.netns, 'ping', ['-n', '-q', '-M', 'do', '-s', String(size), '-c', '1', '-W', '2', target]);
  return (await run(cmd, args, { allowFail: true, timeoutMs: 5000 }).catch(() => ({ code: 1 }))).code === 0;
}
