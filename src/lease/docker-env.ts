import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { cidrContains, parseCidr } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';

/**
 * The docker0 plan of a network in docker0 mode: `<state-dir>/<network>/docker.env`, written by the agent
 * once docker0 is the network's host bridge (after `weft docker-opts` moved it there, and again at every
 * start and lease change), removed when the network leaves the host. `weft docker-opts` prints it when no
 * agent answers, as flannel's mk-docker-opts reads subnet.env: the options dockerd needs come from what the
 * agent actually did, never from subnet.env alone (that would be `--bip` on the lease while weft0 holds the
 * same address, with no `--fixed-cidr`: the addresses handed out twice of issue 14).
 *
 * The text is also a systemd EnvironmentFile for dockerd (DOCKER_NETWORK_OPTIONS).
 */

export const DOCKER_ENV_FILE = 'docker.env';

/** What dockerd needs for docker0 to be a weft network's host bridge (also what the agent's POST /docker-opts answers). */
export interface DockerPlan {
  network: string;
  /** This host's lease. */
  subnet: string;
  /** --bip: the gateway with the lease's prefix length. */
  bip: string;
  /** --fixed-cidr: the part of the lease Docker's own IPAM hands out (weft never does). */
  fixedCidr: string;
  mtu: number;
  /** --ip-masq: always false, weft masquerades egress itself. */
  ipMasq: false;
}

/** Where the agent writes a network's docker0 plan. */
export function dockerEnvPath(stateDir: string, network: string): string {
  return join(stateDir, network, DOCKER_ENV_FILE);
}

/** dockerd's options for the plan: `--bip=… --fixed-cidr=… --mtu=… --ip-masq=false`. */
export function dockerOptionsLine(p: Pick<DockerPlan, 'bip' | 'fixedCidr' | 'mtu'>): string {
  return `--bip=${p.bip} --fixed-cidr=${p.fixedCidr} --mtu=${p.mtu} --ip-masq=false`;
}

export function formatDockerEnv(p: DockerPlan): string {
  return [
    `# weft agent: docker0 is the host bridge of network ${p.network} on this host; start dockerd with DOCKER_NETWORK_OPTIONS`,
    `WEFT_NETWORK=${p.network}`,
    `WEFT_SUBNET=${p.subnet}`,
    `WEFT_DOCKER_BIP=${p.bip}`,
    `WEFT_DOCKER_FIXED_CIDR=${p.fixedCidr}`,
    `WEFT_DOCKER_MTU=${p.mtu}`,
    `WEFT_DOCKER_IPMASQ=false`,
    `DOCKER_NETWORK_OPTIONS="${dockerOptionsLine(p)}"`,
  ].join('\n') + '\n';
}

const CIDR = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;

/** Reads the plan back; a WeftError naming the file when it is not one the agent wrote whole. */
export function parseDockerEnv(text: string, file: string): DockerPlan {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!.trim().replace(/^"(.*)"$/, '$1');
  }
  const bad = (why: string) => new WeftError(`${file} is not a docker0 plan written by the weft agent (${why}): start 'weft agent' and run 'weft docker-opts' again`);
  const { WEFT_NETWORK: network, WEFT_SUBNET: subnet, WEFT_DOCKER_BIP: bip, WEFT_DOCKER_FIXED_CIDR: fixedCidr, WEFT_DOCKER_IPMASQ: masq } = env;
  const mtu = Number(env.WEFT_DOCKER_MTU);
  if (!network || !subnet || !bip || !fixedCidr) throw bad('a WEFT_ value is missing');
  if (![subnet, bip, fixedCidr].every((c) => CIDR.test(c))) throw bad('an address is not address/len');
  if (!Number.isInteger(mtu) || mtu <= 0) throw bad(`WEFT_DOCKER_MTU=${env.WEFT_DOCKER_MTU}`);
  if (masq !== 'false') throw bad(`WEFT_DOCKER_IPMASQ=${masq}`);
  const [, bipLen] = bip.split('/');
  if (Number(bipLen) !== parseCidr(subnet).len || !cidrContains(subnet, bip.split('/')[0]!) || !cidrContains(subnet, fixedCidr.split('/')[0]!) || parseCidr(fixedCidr).len <= parseCidr(subnet).len) {
    throw bad(`--bip ${bip} and --fixed-cidr ${fixedCidr} do not fit the lease ${subnet}`);
  }
  return { network, subnet, bip, fixedCidr, mtu, ipMasq: false };
}

/** Writes the plan atomically (temp file + rename), 0644 whatever the umask (no secret in it; dockerd's unit may read it). */
export async function writeDockerEnv(path: string, p: DockerPlan): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, formatDockerEnv(p), { mode: 0o644 });
  await chmod(tmp, 0o644);
  await rename(tmp, path);
}

export async function removeDockerEnv(path: string): Promise<void> {
  await rm(path, { force: true });
}
