import type { Command } from 'commander';
import { readdir, readFile, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { callAgent, DEFAULT_API_SOCKET, DEFAULT_STATE_DIR, NO_AGENT } from '../agent/client.js';
import type { DockerOptions } from '../agent/types.js';
import { subnetEnvPath } from '../lease/subnet-env.js';
import { DOCKER_ENV_FILE, dockerEnvPath, dockerOptionsLine, parseDockerEnv } from '../lease/docker-env.js';
import { WeftError } from '../util/errors.js';

/**
 * `weft docker-opts [--network NAME] [--api SOCK] [--state-dir DIR] [--env]` — flannel's
 * DOCKER_NETWORK_OPTIONS, done so that it works: the agent makes docker0 the network's host bridge and keeps
 * the upper half of this host's lease for Docker's own IPAM; this prints
 * `--bip=<gateway>/<len> --fixed-cidr=<upper half> --mtu=<mtu> --ip-masq=false` for dockerd.
 * Sequence: weft agent → weft docker-opts → restart dockerd with those options.
 *
 * When no agent answers (dockerd's unit starting before weft's at boot, as flannel's mk-docker-opts reads
 * subnet.env), it prints the docker0 plan the agent wrote (`<state-dir>/<network>/docker.env`) once docker0
 * became the network's bridge. Without that plan it refuses: options made from subnet.env alone would put
 * the lease's gateway on docker0 while weft's own bridge holds it, and both IPAMs would hand out the same
 * addresses.
 */

export interface DockerOpts {
  network: string;
  subnet: string;
  bip: string;
  /** Docker's part of the lease (weft's IPAM never hands it out). */
  fixedCidr: string;
  mtu: number;
  /** Where it came from: "agent" or the docker.env path. */
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

const readOrUndefined = (file: string) => readFile(file, 'utf8').catch(() => undefined);

export async function dockerOpts(o: { network?: string; api?: string; stateDir?: string }): Promise<DockerOpts> {
  const api = o.api ?? DEFAULT_API_SOCKET;
  const fromAgent = await callAgent<DockerOptions>(api, 'POST', '/docker-opts', o.network ? { network: o.network } : {}).catch((err: unknown) => {
    if (err instanceof WeftError && err.code === NO_AGENT) return undefined;
    throw err;
  });
  if (fromAgent) return { network: fromAgent.network, subnet: fromAgent.subnet, bip: fromAgent.bip, fixedCidr: fromAgent.fixedCidr, mtu: fromAgent.mtu, source: 'agent' };
  return planWithoutAgent(api, o.stateDir ?? DEFAULT_STATE_DIR, o.network);
}

/** The docker0 plan the agent left in the state dir; a WeftError saying what to do when there is none. */
async function planWithoutAgent(api: string, dir: string, network: string | undefined): Promise<DockerOpts> {
  const nets = (await readdir(dir, { withFileTypes: true }).catch(() => [])).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const has = async (file: string) => (await stat(file).catch(() => undefined))?.isFile() === true;
  const candidates = network ? [network] : nets;
  const planned: string[] = [];
  for (const n of candidates) if (await has(dockerEnvPath(dir, n))) planned.push(n);
  if (planned.length > 1) throw new WeftError(`no weft agent at ${api}, and docker0 plans for several networks in ${dir} (${planned.join(', ')}): pass --network NAME`);
  const name = planned[0];
  if (name === undefined) {
    let known = false;
    for (const n of candidates) known ||= await has(subnetEnvPath(dir, n));
    if (!network) known ||= await has(path.join(dir, 'subnet.env'));
    if (!known) throw new WeftError(`no weft agent at ${api} and no ${network ? `state of network ${network}` : 'weft state'} in ${dir} (start 'weft agent', or pass --api SOCK / --state-dir DIR)`);
    throw new WeftError(
      `no weft agent at ${api}, and docker0 is not the bridge of ${network ? `network ${network}` : 'any network'} on this host yet (no ${path.join(dir, network ?? '<network>', DOCKER_ENV_FILE)}; options from subnet.env alone would hand out addresses twice): start 'weft agent' and run 'weft docker-opts' once, later runs work without the agent`,
    );
  }
  const file = dockerEnvPath(dir, name);
  const plan = parseDockerEnv((await readOrUndefined(file)) ?? '', file);
  if (plan.network !== name) throw new WeftError(`${file} is for network ${plan.network}, not ${name}: start 'weft agent' to rewrite it`);
  // the agent writes subnet.env and docker.env together: a disagreement means one of them is stale
  const envFile = subnetEnvPath(dir, name);
  const env = await readOrUndefined(envFile);
  const sub = env === undefined ? undefined : parseSubnetEnv(env).FLANNEL_SUBNET;
  if (sub !== undefined && sub !== plan.bip) throw new WeftError(`${file} (--bip=${plan.bip}) disagrees with ${envFile} (FLANNEL_SUBNET=${sub}): start 'weft agent' to rewrite both`);
  return { network: plan.network, subnet: plan.subnet, bip: plan.bip, fixedCidr: plan.fixedCidr, mtu: plan.mtu, source: file };
}

export function formatDockerOpts(d: DockerOpts): string {
  return dockerOptionsLine(d);
}

export function registerDocker(program: Command): void {
  program
    .command('docker-opts')
    .description("make docker0 the network's bridge on this host and print dockerd's options (--bip, --fixed-cidr, --mtu, --ip-masq=false); then restart dockerd with them")
    .option('--network <name>', 'network (default: the host\'s first network)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--state-dir <dir>', 'where the agent keeps its docker0 plan (printed when no agent answers)', DEFAULT_STATE_DIR)
    .option('--env', 'print DOCKER_NETWORK_OPTIONS="..." (for an environment file)')
    .action(async (opts: { network?: string; api: string; stateDir: string; env?: boolean }) => {
      const d = await dockerOpts({ network: opts.network, api: opts.api, stateDir: opts.stateDir });
      const line = formatDockerOpts(d);
      process.stdout.write(opts.env ? `DOCKER_NETWORK_OPTIONS="${line}"\n` : `${line}\n`);
    });
}
