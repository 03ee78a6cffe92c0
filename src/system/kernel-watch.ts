import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { NETLINK_BINARY } from './netlink.js';

/**
 * What changed in this namespace's kernel state, so that the agent's periodic resync re-reads only what
 * may differ (issue 15: an idle agent's resync spawned `ip -json route`, `ip -json link show`, `iptables -S`
 * twice and `ebtables -L` twice every minute, with nothing changed).
 *
 * One long-lived `weft-netlink monitor` (./native/weft-netlink.c) listens on rtnetlink's link, address,
 * route and neighbour groups and on nf_tables' group, and says after each wake-up which kinds changed. Here
 * each kind has a counter; a caller takes a token for the kinds its kernel read depends on *before* the
 * read, keeps it with what it applied, and skips the next periodic read while the token is the same.
 *
 * Kinds: 'link', 'addr', 'route', 'neigh' (any interface), 'neigh:IFINDEX' (one interface; a report of
 * "some neighbour changed" counts for every interface), 'nft' (any nf_tables change: iptables-nft and
 * ebtables-nft rules; only when both commands are the nf_tables variants, else never watchable).
 *
 * A token is undefined — read the kernel — whenever changes cannot be seen: the helper is not built, not
 * started yet, has died (each restart starts a new epoch, so no token from before equals one after), or the
 * kind is not watchable. Anything in doubt (lost messages) is reported as a change of every kind.
 */
export interface KernelTokens {
  token(kinds: readonly string[]): string | undefined;
}

/** No monitor: every read goes to the kernel (unit tests, and hosts without the helper). */
export const NO_KERNEL_WATCH: KernelTokens = { token: () => undefined };

/** Whether `cmd` on PATH is the nf_tables variant (xtables-nft-multi, ebtables-nft, …): its rule changes are nf_tables events. */
export function isNftCommand(cmd: string, envPath = process.env.PATH ?? ''): boolean {
  for (const dir of envPath.split(':')) {
    if (!dir) continue;
    try {
      return /nft/.test(path.basename(fs.realpathSync(path.join(dir, cmd))));
    } catch {
      // not in this dir
    }
  }
  return false;
}

/** How long after the helper died it is started again (ms). */
const RESTART_MS = 10_000;

export class KernelWatch implements KernelTokens {
  private child?: ChildProcess;
  private ready = false;
  private nft = false;
  private epoch = 0;
  private readonly counts = new Map<string, number>();
  private neighAll = 0;
  private buf = '';
  private stopped = false;
  private diedAt = -Infinity;

  constructor(
    private readonly binary = NETLINK_BINARY,
    /** Whether iptables and ebtables are the nf_tables variants (their changes show as 'nft'). */
    private readonly nftRules = () => isNftCommand('iptables') && isNftCommand('ebtables'),
  ) {}

  start(): void {
    this.stopped = false;
    if (this.child) return;
    try {
      fs.accessSync(this.binary, fs.constants.X_OK);
    } catch {
      return; // not built: no tokens, every resync reads the kernel
    }
    this.epoch++;
    this.ready = false;
    this.buf = '';
    const child = spawn(this.binary, ['monitor'], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.child = child;
    child.stdin!.on('error', () => {});
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => this.onData(s));
    const gone = () => {
      if (this.child !== child) return;
      this.child = undefined;
      this.ready = false;
      this.epoch++;
      this.diedAt = Date.now();
    };
    child.once('error', gone);
    child.once('close', gone);
    // never keeps the event loop alive
    child.unref();
    for (const s of [child.stdin, child.stdout]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  stop(): void {
    this.stopped = true;
    const c = this.child;
    this.child = undefined;
    this.ready = false;
    this.epoch++;
    c?.stdin?.end();
  }

  /** Feeds the helper's output (exposed for tests). */
  onData(s: string): void {
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      const [kind, ...rest] = line.split(' ');
      if (kind === 'ready') {
        this.nft = rest[0] !== 'nonft' && this.nftRules();
        this.ready = true;
      } else if (kind === 'neigh') {
        if (rest.includes('*') || !rest.length) this.neighAll++;
        for (const i of rest) if (i !== '*') this.bump(`neigh:${i}`);
        this.bump('neigh');
      } else if (kind) this.bump(kind);
    }
  }

  private bump(kind: string): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
  }

  token(kinds: readonly string[]): string | undefined {
    if (!this.ready) {
      if (!this.child && !this.stopped && Date.now() - this.diedAt >= RESTART_MS && this.epoch > 0) this.start();
      return undefined;
    }
    const parts = [String(this.epoch)];
    for (const k of kinds) {
      if (k === 'nft' && !this.nft) return undefined;
      if (!['link', 'addr', 'route', 'neigh', 'nft'].includes(k) && !/^neigh:\d+$/.test(k)) return undefined;
      parts.push(`${k}=${this.counts.get(k) ?? 0}${k.startsWith('neigh:') ? `+${this.neighAll}` : ''}`);
    }
    return parts.join(' ');
  }
}

/** The agent's one watch of its namespace (started by the agent; stopped with it). */
export const kernelWatch = new KernelWatch();
