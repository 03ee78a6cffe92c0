import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { WeftError } from '../util/errors.js';

/**
 * `weft docker-opts [--network NAME] [--api SOCK] [--state-dir DIR] [--env]` — flannel's DOCKER_NETWORK_OPTIONS:
 * prints `--bip=<first usable>/<len> --mtu=<mtu>` for dockerd's default bridge on this host's lease.
 * Asks the agent (GET /status); when no agent answers, reads the subnet.env the agent wrote in its state dir.
 */

export const DEFAULT_STATE_DIR = process.env.WEFT_STATE_DIR ?? '/var/lib/weft';
const DEFAULT_API = process.env.WEFT_API ?? '/run/weft/weft.sock';

export interface DockerOpts {
  network?: string;
  subnet: string;
  bip: string;
  mtu: number;
  /** Where it came from: "agent" or the subnet.env path. */
  source: string;
}

function firstUsableWithLen(subnet: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet.trim());
  if (!m) throw new WeftError(`not a subnet: ${subnet}`);
  const b = m.slice(1, 5).map(Number);
  const len = Number(m[5]);
  if (b.some((x) => x > 255) || len > 32) throw new WeftError(`not a subnet: ${subnet}`);
  const n = (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) + (len >= 31 ? 0 : 1);
  return `${[(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')}/${len}`;
}

/** GET a JSON path from the agent's unix socket; undefined when no agent listens there. */
function agentGet(socket: string, urlPath: string): Promise<unknown | undefined> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method: 'GET', path: urlPath, timeout: 5000 }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* keep text */
        }
        if ((res.statusCode ?? 500) >= 300) {
          reject(new WeftError((body as { error?: string })?.error ?? `agent answered ${res.statusCode}`));
        } else resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`the agent at ${socket} did not answer`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
    req.end();
  });
}

/** Parses flannel's subnet.env text. */
export function parseSubnetEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim().replace(/^"(.*)"$/, '$1');
  }
  return out;
}

interface StatusShape {
  networks?: Array<{ name: string; subnet: string; mtu: number }>;
}

export async function dockerOpts(o: { network?: string; api?: string; stateDir?: string }): Promise<DockerOpts> {
  const api = o.api ?? DEFAULT_API;
  const status = (await agentGet(api, '/status')) as StatusShape | undefined;
  if (status) {
    const nets = status.networks ?? [];
    const net = o.network ? nets.find((n) => n.name === o.network) : nets[0];
    if (!net) {
      throw new WeftError(
        o.network
          ? `this host has not joined network ${o.network} (joined: ${nets.map((n) => n.name).join(', ') || 'none'})`
          : 'this host has not joined any network yet',
      );
    }
    return { network: net.name, subnet: net.subnet, bip: firstUsableWithLen(net.subnet), mtu: net.mtu, source: 'agent' };
  }
  const dir = o.stateDir ?? DEFAULT_STATE_DIR;
  const candidates = o.network
    ? [path.join(dir, o.network, 'subnet.env'), path.join(dir, `${o.network}.env`), path.join(dir, 'networks', o.network, 'subnet.env')]
    : [path.join(dir, 'subnet.env'), '/run/flannel/subnet.env'];
  for (const file of candidates) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    const env = parseSubnetEnv(text);
    const sub = env.FLANNEL_SUBNET;
    const mtu = Number(env.FLANNEL_MTU);
    if (!sub || !Number.isInteger(mtu) || mtu <= 0) throw new WeftError(`${file} has no FLANNEL_SUBNET/FLANNEL_MTU`);
    if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(sub)) throw new WeftError(`${file}: FLANNEL_SUBNET=${sub} is not an address/len`);
    // FLANNEL_SUBNET is already the lease's first usable address with the lease's prefix length
    return { network: o.network ?? env.WEFT_NETWORK, subnet: sub, bip: sub, mtu, source: file };
  }
  throw new WeftError(`no weft agent at ${api} and no subnet.env in ${dir} (start 'weft agent', or pass --api SOCK / --state-dir DIR)`);
}

export function formatDockerOpts(d: DockerOpts): string {
  return `--bip=${d.bip} --mtu=${d.mtu}`;
}

export function registerDocker(program: Command): void {
  program
    .command('docker-opts')
    .description("print dockerd options (--bip, --mtu) for this host's lease, like flannel's DOCKER_NETWORK_OPTIONS")
    .option('--network <name>', 'network (default: the host\'s first network)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API)
    .option('--state-dir <dir>', 'where the agent keeps subnet.env (used when no agent answers)', DEFAULT_STATE_DIR)
    .option('--env', 'print DOCKER_NETWORK_OPTIONS="..." (for an environment file)')
    .action(async (opts: { network?: string; api: string; stateDir: string; env?: boolean }) => {
      const d = await dockerOpts({ network: opts.network, api: opts.api, stateDir: opts.stateDir });
      const line = formatDockerOpts(d);
      process.stdout.write(opts.env ? `DOCKER_NETWORK_OPTIONS="${line}"\n` : `${line}\n`);
    });
}
