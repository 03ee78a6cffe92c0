import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { callAgent, DEFAULT_API_SOCKET, DEFAULT_STATE_DIR, NO_AGENT } from '../agent/client.js';
import { gatewayCidr } from '../ipam/addresses.js';
import { subnetEnvPath } from '../lease/subnet-env.js';
import { WeftError } from '../util/errors.js';

/**
 * `weft docker-opts [--network NAME] [--api SOCK] [--state-dir DIR] [--env]` — flannel's DOCKER_NETWORK_OPTIONS:
 * prints `--bip=<first usable>/<len> --mtu=<mtu>` for dockerd's default bridge on this host's lease.
 * Asks the agent (GET /status); when no agent answers, reads the subnet.env the agent wrote in its state dir.
 */


export interface DockerOpts {
  network?: string;
  subnet: string;
  bip: string;
  mtu: number;
  /** Where it came from: "agent" or the subnet.env path. */
  source: string;
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
  const api = o.api ?? DEFAULT_API_SOCKET;
  const status = await callAgent<StatusShape>(api, 'GET', '/status', undefined, { timeoutMs: 5000 }).catch((err: unknown) => {
    if (err instanceof WeftError && err.code === NO_AGENT) return undefined;
    throw err;
  });
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
    return { network: net.name, subnet: net.subnet, bip: gatewayCidr(net.subnet), mtu: net.mtu, source: 'agent' };
  }
  const dir = o.stateDir ?? DEFAULT_STATE_DIR;
  const candidates = o.network
    ? [subnetEnvPath(dir, o.network), path.join(dir, `${o.network}.env`), path.join(dir, 'networks', o.network, 'subnet.env')]
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
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--state-dir <dir>', 'where the agent keeps subnet.env (used when no agent answers)', DEFAULT_STATE_DIR)
    .option('--env', 'print DOCKER_NETWORK_OPTIONS="..." (for an environment file)')
    .action(async (opts: { network?: string; api: string; stateDir: string; env?: boolean }) => {
      const d = await dockerOpts({ network: opts.network, api: opts.api, stateDir: opts.stateDir });
      const line = formatDockerOpts(d);
      process.stdout.write(opts.env ? `DOCKER_NETWORK_OPTIONS="${line}"\n` : `${line}\n`);
    });
}
