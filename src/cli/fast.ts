import { callAgent, DEFAULT_API_SOCKET, DEFAULT_TIMEOUT_SECONDS } from '../agent/client.js';
import type { Endpoint } from '../agent/types.js';
import { WeftError } from '../util/errors.js';

/**
 * The hot path of the CLI: `weft attach` and `weft detach` (called once per container by scripts and
 * runtimes) parsed here with nothing loaded but the agent's HTTP client. Commander and every other module
 * cost ~40–60 % on top of Node's own start-up. Only the plain forms are taken: anything else (help, an
 * unknown or malformed option, a wrong number of arguments) returns false and the full CLI (main.ts)
 * handles it, so its messages and exit codes stay the only ones.
 */

interface Spec {
  positional: { min: number; max: number };
  /** Options taking a value, by long name. */
  values: string[];
  /** Flags. */
  flags: string[];
}

const SPECS: Record<string, Spec> = {
  attach: { positional: { min: 1, max: 2 }, values: ['network', 'name', 'ifname', 'api', 'timeout'], flags: ['json'] },
  detach: { positional: { min: 1, max: 1 }, values: ['network', 'api', 'timeout'], flags: ['json'] },
};

export interface FastArgs {
  command: string;
  args: string[];
  opts: Record<string, string | true>;
}

/** The command line as the fast path understands it, or undefined when main.ts must handle it. */
export function parseFast(argv: readonly string[]): FastArgs | undefined {
  const command = argv[2] ?? '';
  const spec = SPECS[command];
  if (!spec) return undefined;
  const args: string[] = [];
  const opts: Record<string, string | true> = {};
  const rest = argv.slice(3);
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith('-')) {
      args.push(a);
      continue;
    }
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
    if (!m || m[1]! in opts) return undefined; // -h, --help, `--`, short or repeated options: main.ts
    const name = m[1]!;
    if (spec.flags.includes(name)) {
      if (m[2] !== undefined) return undefined;
      opts[name] = true;
    } else if (spec.values.includes(name)) {
      const v = m[2] ?? rest[++i];
      if (v === undefined || v === '' || (m[2] === undefined && v.startsWith('-'))) return undefined;
      opts[name] = v;
    } else return undefined;
  }
  if (args.length < spec.positional.min || args.length > spec.positional.max) return undefined;
  const t = opts.timeout;
  if (t !== undefined && (typeof t !== 'string' || !/^\d+(\.\d+)?$/.test(t) || !(Number(t) > 0))) return undefined;
  return { command, args, opts };
}

/** Runs the command when the fast path takes it (true), else returns false without doing anything. */
export async function runFast(argv: readonly string[]): Promise<boolean> {
  const p = parseFast(argv);
  if (!p) return false;
  const api = typeof p.opts.api === 'string' ? p.opts.api : DEFAULT_API_SOCKET;
  const timeoutMs = Math.round(Number(p.opts.timeout ?? DEFAULT_TIMEOUT_SECONDS) * 1000);
  const str = (k: string) => (typeof p.opts[k] === 'string' ? (p.opts[k] as string) : undefined);
  try {
    if (p.command === 'attach') {
      const [container, address] = p.args;
      const ep = await callAgent<Endpoint>(api, 'POST', '/attach', { container, address, network: str('network'), name: str('name'), ifname: str('ifname') }, { timeoutMs, checkWith: `weft ps --api ${api}` });
      process.stdout.write(p.opts.json ? JSON.stringify(ep, null, 2) + '\n' : `${ep.address}\n`);
    } else {
      const eps = await callAgent<Endpoint[]>(api, 'POST', '/detach', { container: p.args[0], network: str('network') }, { timeoutMs, checkWith: `weft ps --api ${api}` });
      if (p.opts.json) process.stdout.write(JSON.stringify(eps, null, 2) + '\n');
      else for (const ep of eps) process.stdout.write(`detached ${ep.container} from ${ep.network} (${ep.address})\n`);
    }
  } catch (err) {
    // the same one line as main.ts
    const msg = err instanceof WeftError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`weft: ${msg.split('\n')[0]}\n`);
    if (process.env.WEFT_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
  return true;
}
