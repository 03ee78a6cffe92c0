import { existsSync } from 'node:fs';
import path from 'node:path';
import { ExecError, run } from './exec.js';
import { ipJson } from './ip.js';
import type { NsOpts } from './netns.js';
import type { RouteFact } from './ops.js';

/**
 * BIRD 2 helpers: its control socket through `birdc`, and what `birdc show protocols [all]` prints.
 * The socket is a unix socket, so birdc needs no namespace switch.
 */

export const BIRD = 'bird';
export const BIRDC = 'birdc';

/** One row of `birdc show protocols`. */
export interface BirdProtocol {
  name: string;
  proto: string;
  table: string;
  /** up, down, start, stop, … */
  state: string;
  since: string;
  /** Whole Info column, e.g. "Established" or "Active        Socket: Connection refused". */
  info: string;
  /** For BGP: the first word of info (Idle, Connect, Active, OpenSent, OpenConfirm, Established). */
  bgpState?: string;
  /** For BGP: the rest of info (last error), if any. */
  detail?: string;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const TIME = /^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/;

/** Parses `birdc show protocols` (header and the "BIRD x ready." line are skipped). */
export function parseShowProtocols(text: string): BirdProtocol[] {
  const out: BirdProtocol[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (!line.trim() || /^BIRD [\d.]+ ready\.$/.test(line) || /^Name\s+Proto\s+Table\s+State/.test(line)) continue;
    // birdc -v style lines ("1002-name ...") carry a numeric code: drop it
    const m = /^(?:\d{4}[- ])?(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(.*)$/.exec(line);
    if (!m) continue;
    let since = m[5]!;
    let rest = m[6]!;
    const next = /^\s+(\S+)(.*)$/.exec(rest);
    if (next && DATE.test(since) && TIME.test(next[1]!)) {
      since = `${since} ${next[1]}`;
      rest = next[2]!;
    }
    const info = rest.trim();
    const row: BirdProtocol = { name: m[1]!, proto: m[2]!, table: m[3]!, state: m[4]!, since, info };
    if (row.proto === 'BGP') {
      const w = /^(\S+)\s*(.*)$/.exec(info);
      row.bgpState = w?.[1] ?? '';
      if (w?.[2]) row.detail = w[2];
    }
    out.push(row);
  }
  return out;
}

/** What `birdc show protocols all NAME` adds for a BGP protocol. */
export interface BirdBgpDetail {
  name: string;
  bgpState?: string;
  neighborAddress?: string;
  neighborAs?: number;
  localAs?: number;
  lastError?: string;
  /** Imported/exported route counts of the ipv4 channel, when shown. */
  routes?: { imported: number; exported: number };
}

/** Parses `birdc show protocols all` (one or several protocols). */
export function parseShowProtocolsAll(text: string): BirdBgpDetail[] {
  const out: BirdBgpDetail[] = [];
  let cur: BirdBgpDetail | undefined;
  for (const line of text.split('\n')) {
    const head = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+/.exec(line);
    if (head && !/^(Name|BIRD)\b/.test(line)) {
      cur = { name: head[1]! };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const kv = /^\s+([A-Za-z][A-Za-z0-9 ]*?):\s+(.*)$/.exec(line);
    if (!kv) continue;
    const [, k, v] = kv;
    switch (k) {
      case 'BGP state': cur.bgpState = v!.trim(); break;
      case 'Neighbor address': cur.neighborAddress = v!.trim(); break;
      case 'Neighbor AS': cur.neighborAs = Number(v); break;
      case 'Local AS': cur.localAs = Number(v); break;
      case 'Last error': cur.lastError = v!.trim(); break;
      case 'Routes': {
        const r = /(\d+) imported.*?(\d+) exported/.exec(v!);
        if (r) cur.routes = { imported: Number(r[1]), exported: Number(r[2]) };
        break;
      }
    }
  }
  return out;
}

/** Runs `birdc -s SOCK ARGS…`; throws ExecError when birdc fails or cannot reach the daemon. */
export async function birdc(sock: string, args: readonly string[], timeoutMs = 5000): Promise<string> {
  const r = await run(BIRDC, ['-s', sock, ...args], { timeoutMs, allowFail: true });
  const text = r.stdout + r.stderr;
  if (r.code !== 0 || /Unable to connect to server control socket/.test(text)) {
    throw new ExecError(BIRDC, ['-s', sock, ...args], r.code, r.stderr || r.stdout, r.stdout);
  }
  return r.stdout;
}

/** True when a bird answers on `sock`. */
export async function birdAnswers(sock: string): Promise<boolean> {
  try {
    await birdc(sock, ['show', 'status'], 2000);
    return true;
  } catch {
    return false;
  }
}

/** `birdc configure`: the daemon re-reads its config file; unchanged protocols keep their sessions. */
export async function birdConfigure(sock: string): Promise<void> {
  const out = await birdc(sock, ['configure'], 15_000);
  if (!/Reconfigured|Reconfiguration in progress|Reconfiguration already in progress|queued/i.test(out)) {
    throw new ExecError(BIRDC, ['-s', sock, 'configure'], 0, out.trim());
  }
}

/** `bird -p -c FILE`: parses a config file without starting; throws ExecError naming the error. */
export async function birdCheckConfig(file: string): Promise<void> {
  await run(BIRD, ['-p', '-c', file]);
}

export async function birdProtocols(sock: string): Promise<BirdProtocol[]> {
  return parseShowProtocols(await birdc(sock, ['show', 'protocols']));
}

export async function birdProtocolDetail(sock: string, name: string): Promise<BirdBgpDetail | undefined> {
  return parseShowProtocolsAll(await birdc(sock, ['show', 'protocols', 'all', name]))[0];
}

/** The kernel routes BIRD installed (`proto bird`). */
export function readBirdRoutes(sys: NsOpts = {}): Promise<RouteFact[]> {
  return ipJson<RouteFact[]>(['-4', 'route', 'show', 'proto', 'bird'], sys);
}

/** [cmd, args] of the bird daemon in the foreground with its own config and control socket. */
export function birdCommand(conf: string, sock: string): [string, string[]] {
  return [BIRD, ['-f', '-c', conf, '-s', sock]];
}


/** The BIRD programs missing from PATH (bird, birdc), if any. */
export function birdMissing(): string[] {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter(Boolean);
  return [BIRD, BIRDC].filter((b) => !dirs.some((d) => existsSync(path.join(d, b))));
}
