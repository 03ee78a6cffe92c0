import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { netnsPath, type NetnsRef } from './netns.js';

/**
 * The attach path's kernel calls over rtnetlink, without a process per call. One long-lived helper,
 * weft-netlink (C, ./native/weft-netlink.c, built by node-gyp from binding.gyp), takes one request per line
 * and answers each in order: a veth made with its peer directly inside the container's namespace
 * (IFLA_NET_NS_FD) and its host end on the bridge and up, in one RTM_NEWLINK; the container end addressed,
 * up and routed inside its namespace (setns); a link deleted. A request costs a pipe round trip and a few
 * system calls (≈0.1 ms), where `ip -batch` cost a process (2.5–4 ms idle, 10–30 ms loaded).
 *
 * The helper is started on first use and started again on the next request after it died; while it is
 * missing (not built), cannot start, or WEFT_NO_NETLINK is set, `netlinkReady()` is false and callers use
 * `ip -batch` (src/system/veth.ts). Kernel errors come back as NetlinkError with the errno, classified by
 * kernelFailure (src/system/exec.ts) like `ip`'s messages. Like ./warm.ts, the helper keeps the event loop
 * alive only while a request is under way (a CLI must not exit under one, nor wait for it).
 */

// from the package root: this module also runs from the CLI's bundle (dist/bundle/), one level less deep
export const NETLINK_BINARY = path.join(packageRoot(import.meta.url), 'build/Release/weft-netlink');

/** errno names the helper's numbers map to (those kernelFailure and messages care about). */
const ERRNO: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 13: 'EACCES', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL', 95: 'EOPNOTSUPP', 98: 'EADDRINUSE', 101: 'ENETUNREACH', 110: 'ETIMEDOUT' };

/** A kernel call of the helper failed: `errno` as the kernel said it, `step` what was being done. */
export class NetlinkError extends Error {
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly step: string,
    readonly detail: string,
  ) {
    super(`netlink: ${detail}`);
    this.name = 'NetlinkError';
    this.code = ERRNO[errno] ?? `E${errno}`;
  }
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

type Helper = { child: ChildProcess; buf: string; pending: Map<number, Pending> };
/** The running helpers by mode: '' answers the attach path's requests in order, 'echo' the pings (./ping.ts). */
const helpers = new Map<string, Helper>();
let nextId = 1;
/** Set once the binary is found missing or fails to start: every later call uses `ip`. */
let broken = process.env.WEFT_NO_NETLINK !== undefined;

/** Turns the helper off (every caller then uses `ip -batch`) or on again; for tests comparing the two paths. */
export function setNetlinkEnabled(on: boolean): void {
  broken = !on;
}

/** True when requests go to the helper (else callers use `ip -batch`). */
export function netlinkReady(): boolean {
  if (broken) return false;
  if (helpers.size) return true;
  try {
    fs.accessSync(NETLINK_BINARY, fs.constants.X_OK);
    return true;
  } catch {
    broken = true;
    return false;
  }
}

function start(mode: string): Helper {
  const have = helpers.get(mode);
  if (have && have.child.exitCode === null && have.child.signalCode === null) return have;
  const child = spawn(NETLINK_BINARY, mode ? [mode] : [], { stdio: ['pipe', 'pipe', 'ignore'] });
  const h: Helper = { child, buf: '', pending: new Map<number, Pending>() };
  child.stdin!.on('error', () => {});
  child.stdout!.on('data', (b: Buffer) => {
    h.buf += b.toString();
    let nl: number;
    while ((nl = h.buf.indexOf('\n')) >= 0) {
      const line = h.buf.slice(0, nl);
      h.buf = h.buf.slice(nl + 1);
      const m = /^(\d+) (\d+)(?: (.*))?$/.exec(line);
      if (!m) continue;
      const p = h.pending.get(Number(m[1]));
      if (!p) continue;
      h.pending.delete(Number(m[1]));
      const errno = Number(m[2]);
      if (errno === 0) p.resolve();
      else {
        const detail = m[3] ?? `errno ${errno}`;
        p.reject(new NetlinkError(errno, detail.split(':')[0]!, detail));
      }
    }
    if (!h.pending.size) idle(h);
  });
  const gone = (err?: Error) => {
    if (helpers.get(mode) === h) helpers.delete(mode);
    if ((err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT' || (err as NodeJS.ErrnoException | undefined)?.code === 'EACCES') broken = true;
    for (const [id, p] of h.pending) {
      h.pending.delete(id);
      p.reject(new Error(`weft-netlink exited before answering${err ? ` (${err.message})` : ''}`));
    }
  };
  child.once('error', gone);
  child.once('close', () => gone());
  helpers.set(mode, h);
  idle(h);
  return h;
}

function idle(h: Helper): void {
  h.child.unref();
  for (const s of [h.child.stdin, h.child.stdout]) (s as unknown as { unref?: () => void } | null)?.unref?.();
}
function busy(h: Helper): void {
  h.child.ref();
  for (const s of [h.child.stdin, h.child.stdout]) (s as unknown as { ref?: () => void } | null)?.ref?.();
}

/** Fields may not contain the protocol's separators (callers check names first; this is the last guard). */
function usable(fields: readonly string[]): boolean {
  return fields.every((f) => f !== '' && !/[\t\n\r]/.test(f));
}

function request(op: string, fields: string[], mode = ''): Promise<void> {
  if (!usable(fields)) return Promise.reject(new NetlinkError(22, 'request', `request: a field holds a tab or newline, or is empty: ${JSON.stringify(fields)}`));
  const h = start(mode);
  const id = nextId++;
  return new Promise<void>((resolve, reject) => {
    h.pending.set(id, { resolve, reject });
    busy(h);
    h.child.stdin!.write(`${[op, String(id), ...fields].join('\t')}\n`);
  });
}

const nsField = (ns: NetnsRef | string | undefined) => (ns === undefined ? '-' : netnsPath(ns));

/** Whether these namespaces can be named to the helper (a path without tab or newline). */
export function netlinkCanReach(...ns: Array<NetnsRef | string | undefined>): boolean {
  return usable(ns.map(nsField));
}

/**
 * `ip link add HOSTIF mtu MTU master BRIDGE up type veth peer name IFNAME mtu MTU address MAC netns NS`, in
 * one RTM_NEWLINK with NLM_F_EXCL (EEXIST when either name is taken; nothing is left on any failure).
 */
export function nlCreateVeth(o: { hostIf: string; ifname: string; mtu: number; mac?: string; netns: NetnsRef | string; bridge?: string; hostNetns?: NetnsRef | string }): Promise<void> {
  return request('V', [nsField(o.hostNetns), o.hostIf, o.ifname, String(o.mtu), o.mac ?? '-', netnsPath(o.netns), o.bridge ?? '-']);
}

/** Inside `netns`: lo up, `address` on `ifname`, `ifname` up, and a route to `routeTo` via `gateway` when given. */
export function nlConfigure(o: { netns: NetnsRef | string; ifname: string; address: string; gateway?: string; routeTo?: string }): Promise<void> {
  return request('C', [netnsPath(o.netns), o.ifname, o.address, o.gateway ?? '-', o.gateway ? (o.routeTo ?? 'default') : '-']);
}

/** `ip link del IFNAME` (in `netns` when given); NetlinkError ENODEV when it does not exist. */
export function nlDeleteLink(ifname: string, netns?: NetnsRef | string): Promise<void> {
  return request('D', [nsField(netns), ifname]);
}

/**
 * One ICMP echo to `target` from this process's namespace, by `weft-netlink echo` (a second long-lived helper,
 * started on first use: its echoes run concurrently and answer out of order, so they cannot wait behind the
 * attach path's requests or hold them up): whether it answered within `timeoutMs`. Rejects with a NetlinkError
 * when the echo could not be sent (EPERM: no CAP_NET_RAW for its raw socket); callers then run `ping`.
 */
export async function nlEcho(target: string, timeoutMs: number): Promise<boolean> {
  try {
    await request('E', [target, String(Math.max(1, Math.round(timeoutMs)))], 'echo');
    return true;
  } catch (err) {
    if (err instanceof NetlinkError && err.errno === ETIMEDOUT) return false;
    throw err;
  }
}
const ETIMEDOUT = 110;

/** Ends the helpers (agent stop); a later request starts them again. */
export function stopNetlink(): void {
  for (const h of helpers.values()) h.child.stdin!.end();
}
