import { existsSync } from 'node:fs';
import { WeftError } from '../util/errors.js';

/** A network namespace: by name (/run/netns/NAME) or by a process living in it. */
export type NetnsRef = { name: string } | { pid: number };
/** Where a system call should act: `netns` absent means the caller's own namespace. */
export interface NsOpts {
  netns?: NetnsRef | string;
}

export const NETNS_DIR = '/run/netns';

export function toRef(ns: NetnsRef | string): NetnsRef {
  return typeof ns === 'string' ? { name: ns } : ns;
}

/** What `ip link ... netns X` accepts: a name or a PID. */
export function netnsArg(ns: NetnsRef | string): string {
  const r = toRef(ns);
  return 'name' in r ? r.name : String(r.pid);
}

/** The namespace's file: /run/netns/NAME or /proc/PID/ns/net (what setns and IFLA_NET_NS_FD open). */
export function netnsPath(ns: NetnsRef | string): string {
  const r = toRef(ns);
  return 'name' in r ? `${NETNS_DIR}/${r.name}` : `/proc/${r.pid}/ns/net`;
}

export function describeNetns(ns: NetnsRef | string): string {
  const r = toRef(ns);
  return 'name' in r ? `netns ${r.name}` : `netns of pid ${r.pid}`;
}

/** [cmd, args] that run `cmd args` inside the namespace (or as is without one). */
export function inNetns(ns: NetnsRef | string | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  if (ns === undefined) return [cmd, [...args]];
  const r = toRef(ns);
  if ('name' in r) return ['nsenter', [`--net=${NETNS_DIR}/${r.name}`, cmd, ...args]];
  return ['nsenter', ['-t', String(r.pid), '-n', cmd, ...args]];
}

/**
 * Resolves what a user typed as CONTAINER: a netns name, /run/netns/NAME, /proc/PID/ns/net or a PID.
 * (Docker ids/names are resolved by the Docker adapter into a PID first.)
 */
export function resolveNetns(container: string): NetnsRef {
  const s = container.trim();
  let m = /^(\d+)$/.exec(s) ?? /^\/proc\/(\d+)\/ns\/net$/.exec(s);
  if (m) {
    const pid = Number(m[1]);
    if (!existsSync(`/proc/${pid}/ns/net`)) throw new WeftError(`unknown container "${container}": no process with pid ${pid}`, 'ENOCONTAINER');
    return { pid };
  }
  m = /^(?:\/var)?\/run\/netns\/([^/]+)$/.exec(s);
  const name = m ? m[1]! : s;
  if (name && !name.includes('/') && name !== '.' && name !== '..' && existsSync(`${NETNS_DIR}/${name}`)) return { name };
  throw new WeftError(
    `unknown container "${container}": not a network namespace in ${NETNS_DIR}, a /proc/PID/ns/net path or a running PID`,
    'ENOCONTAINER',
  );
}
