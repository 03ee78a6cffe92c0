import fs from 'node:fs';
import path from 'node:path';

/**
 * resolv.conf for named network namespaces: `ip netns exec NAME` bind-mounts /etc/netns/NAME/resolv.conf
 * over /etc/resolv.conf, so processes started that way ask weft's server on the gateway. weft marks the
 * files it writes and only ever replaces or removes those.
 */

export const NETNS_ETC = '/etc/netns';
const MARK = '# written by weft';

export function resolvConfText(nameserver: string, domain: string): string {
  return `${MARK} (removed on detach)\nnameserver ${nameserver}\nsearch ${domain}\noptions ndots:1 timeout:2 attempts:2\n`;
}

function fileOf(netnsName: string, dir: string): string | undefined {
  // Names come from /run/netns entries; still never let one leave the directory.
  if (!netnsName || netnsName.includes('/') || netnsName === '.' || netnsName === '..') return undefined;
  return path.join(dir, netnsName, 'resolv.conf');
}

function ownedByWeft(file: string): boolean {
  try {
    return fs.readFileSync(file, 'utf8').startsWith(MARK);
  } catch {
    return false;
  }
}

/**
 * Writes the namespace's resolv.conf (mode 0644) unless someone else's file is there. `replace: false`
 * keeps an existing weft file (a container's second network must not take over its first one's DNS).
 * True when written.
 */
export function writeNetnsResolvConf(netnsName: string, nameserver: string, domain: string, o: { replace?: boolean; dir?: string } = {}): boolean {
  const file = fileOf(netnsName, o.dir ?? NETNS_ETC);
  if (!file) return false;
  if (fs.existsSync(file) && (!ownedByWeft(file) || o.replace === false)) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.weft-${process.pid}`;
  fs.writeFileSync(tmp, resolvConfText(nameserver, domain), { mode: 0o644 });
  fs.chmodSync(tmp, 0o644);
  fs.renameSync(tmp, file);
  return true;
}

/**
 * Removes the namespace's resolv.conf when weft wrote it and it points at `nameserver` (the detached
 * network's gateway), and the namespace's directory when that leaves it empty. True when removed.
 */
export function removeNetnsResolvConf(netnsName: string, nameserver: string, o: { dir?: string } = {}): boolean {
  const file = fileOf(netnsName, o.dir ?? NETNS_ETC);
  if (!file || !ownedByWeft(file)) return false;
  if (!fs.readFileSync(file, 'utf8').includes(`\nnameserver ${nameserver}\n`)) return false;
  fs.rmSync(file, { force: true });
  try {
    fs.rmdirSync(path.dirname(file));
  } catch {
    /* not empty: other files of the namespace stay */
  }
  return true;
}

/**
 * Removes the resolv.conf files weft wrote for namespaces that no longer exist (deleted without a detach,
 * or while the agent was down). Files of live namespaces and anyone else's files stay. Returns the names.
 */
export function pruneNetnsResolvConfs(o: { dir?: string; netnsDir?: string } = {}): string[] {
  const dir = o.dir ?? NETNS_ETC;
  const live = o.netnsDir ?? '/run/netns';
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const gone: string[] = [];
  for (const n of names) {
    const file = fileOf(n, dir);
    if (!file || fs.existsSync(path.join(live, n)) || !ownedByWeft(file)) continue;
    fs.rmSync(file, { force: true });
    try {
      fs.rmdirSync(path.dirname(file));
    } catch {
      /* other files stay */
    }
    gone.push(n);
  }
  return gone;
}
