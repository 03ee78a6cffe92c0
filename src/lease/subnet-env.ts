import { chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gatewayCidr } from '../ipam/addresses.js';

/** flannel's /run/flannel/subnet.env, which CNI's flannel plugin and docker setups read. */

export interface SubnetEnv {
  /** The whole network, e.g. "10.5.0.0/16". */
  network: string;
  /** This host's leased subnet, e.g. "10.5.72.0/24". */
  subnet: string;
  mtu: number;
  ipMasq: boolean;
}

/** The file's text, in flannel's order; FLANNEL_SUBNET is the first usable address with the lease's prefix. */
export function formatSubnetEnv(env: SubnetEnv): string {
  return [
    `FLANNEL_NETWORK=${env.network}`,
    `FLANNEL_SUBNET=${gatewayCidr(env.subnet)}`,
    `FLANNEL_MTU=${env.mtu}`,
    `FLANNEL_IPMASQ=${env.ipMasq}`,
  ].join('\n') + '\n';
}

/** Where the agent writes a network's subnet.env: `<state-dir>/<network>/subnet.env`. */
export function subnetEnvPath(stateDir: string, network: string): string {
  return join(stateDir, network, 'subnet.env');
}

/** Writes the file atomically (temp file + rename), creating its directory; 0644 as flannel's (no secret in it). */
export async function writeSubnetEnv(path: string, env: SubnetEnv): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, formatSubnetEnv(env), { mode: 0o644 });
  await chmod(tmp, 0o644);
  await rename(tmp, path);
}
