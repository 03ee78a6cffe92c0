import { ExecError, run, type RunResult } from './exec.js';
import { inNetns, toRef, type NsOpts } from './netns.js';

/** `ip ARGS` as a command line, in the namespace when given. */
export function ipCommand(args: readonly string[], opts: NsOpts): [string, string[]] {
  if (opts.netns === undefined) return ['ip', [...args]];
  const r = toRef(opts.netns);
  if ('name' in r) return ['ip', ['-n', r.name, ...args]];
  return inNetns(r, 'ip', args);
}

/** Runs `ip ARGS` (in the namespace when given); throws ExecError with stderr on failure. */
export async function ip(args: readonly string[], opts: NsOpts & { allowFail?: boolean } = {}): Promise<RunResult> {
  const [cmd, a] = ipCommand(args, opts);
  return run(cmd, a, { allowFail: opts.allowFail });
}

/** Runs `ip -json ARGS` and parses the output (empty output is []). */
export async function ipJson<T = any>(args: readonly string[], opts: NsOpts = {}): Promise<T> {
  const { stdout } = await ip(['-json', ...args], opts);
  const text = stdout.trim();
  return (text === '' ? [] : JSON.parse(text)) as T;
}

/**
 * Feeds `lines` to one `ip -batch -` process. With `force`, ip carries on past failing lines
 * (`-force`) and the ExecError thrown at the end lists what failed. No lines → no process.
 */
export async function ipBatch(lines: readonly string[], opts: NsOpts & { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const [cmd, a] = ipCommand([...(opts.force ? ['-force'] : []), '-batch', '-'], opts);
  await run(cmd, a, { input: lines.join('\n') + '\n' });
}

/** Same as ipBatch for the `bridge` tool (fdb entries). */
export async function bridgeBatch(lines: readonly string[], opts: NsOpts & { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const [cmd, a] = inNetns(opts.netns, 'bridge', [...(opts.force ? ['-force'] : []), '-batch', '-']);
  await run(cmd, a, { input: lines.join('\n') + '\n' });
}

/** Runs `bridge -json ARGS` and parses the output. */
export async function bridgeJson<T = any>(args: readonly string[], opts: NsOpts = {}): Promise<T> {
  const [cmd, a] = inNetns(opts.netns, 'bridge', ['-json', ...args]);
  const { stdout } = await run(cmd, a);
  const text = stdout.trim();
  return (text === '' ? [] : JSON.parse(text)) as T;
}

export interface IpLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
  master?: string;
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, any> };
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}

/** The link (with -details and addresses), or null when it does not exist. */
export async function getLink(name: string, opts: NsOpts = {}): Promise<IpLink | null> {
  const r = await ip(['-json', '-details', 'addr', 'show', 'dev', name], { ...opts, allowFail: true });
  if (r.code !== 0) {
    if (/does not exist|Cannot find device/i.test(r.stderr)) return null;
    const [cmd, a] = ipCommand(['-json', '-details', 'addr', 'show', 'dev', name], opts);
    throw new ExecError(cmd, a, r.code, r.stderr);
  }
  const arr = JSON.parse(r.stdout.trim() || '[]') as IpLink[];
  return arr[0] ?? null;
}

/** Names of all links in the namespace. */
export async function listInterfaces(opts: NsOpts = {}): Promise<string[]> {
  const links = await ipJson<IpLink[]>(['link', 'show'], opts);
  return links.map((l) => l.ifname);
}
