import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { callAgent, DEFAULT_API_SOCKET, DEFAULT_STATE_DIR, NO_AGENT } from '../agent/client.js';
import type { DockerOptions } from '../agent/types.js';
import { subnetEnvPath } from '../lease/subnet-env.js';
import { WeftError } from '../util/errors.js';

/**
 * `weft docker-opts [--network NAME] [--api SOCK] [--state-dir DIR] [--env]` — flannel's
 * DOCKER_NETWORK_OPTIONS, done so that it works: the agent makes docker0 the network's host bridge and keeps
 * the upper half of this host's lease for Docker's own IPAM; this prints
 * `--bip=<gateway>/<len> --fixed-cidr=<upper half> --mtu=<mtu> --ip-masq=false` for dockerd.
 * Sequence: weft agent → weft docker-opts → restart dockerd with those options.
 * When no agent answers, it prints what the subnet.env the agent wrote says (the agent then does the
 * docker0 switch when it next runs docker-opts).
 */

export interface DockerOpts {
  network?: string;
  subnet: string;
  bip: string;
  /** Docker's part of the lease; absent when read from subnet.env without an agent. */
  fixedCidr?: string;
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

export async function dockerOpts(o: { network?: string; api?: string; stateDir?: string }): Promise<DockerOpts> {
  const api = o.api ?? DEFAULT_API_SOCKET;
  const fromAgent = await callAgent<DockerOptions>(api, 'POST', '/docker-opts', o.network ? { network: o.network } : {}).catch((err: unknown) => {
    if (err instanceof WeftError && err.code === NO_AGENT) return undefined;
    throw err;
  });
  if (fromAgent) return { network: fromAgent.network, subnet: fromAgent.subnet, bip: fromAgent.bip, fixedCidr: fromAgent.fixedCidr, mtu: fromAgent.mtu, source: 'agent' };
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
  return `--bip=${d.bip}${d.fixedCidr ? ` --fixed-cidr=${d.fixedCidr}` : ''} --mtu=${d.mtu} --ip-masq=false`;
}

export function registerDocker(program: Command): void {
  program
    .command('docker-opts')
    .description("make docker0 the network's bridge on this host and print dockerd's options (--bip, --fixed-cidr, --mtu, --ip-masq=false); then restart dockerd with them")
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
