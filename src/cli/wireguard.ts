import type { Command } from 'commander';
import { callAgent, DEFAULT_API_SOCKET } from '../agent/client.js';
import { printJson, printTable } from './output.js';

/** `weft rotate-keys`: a new WireGuard key pair for this host, published in its lease (peers follow). */
export function registerWireguard(program: Command): void {
  program
    .command('rotate-keys')
    .description("give this host a new key pair in a network with keys (wireguard) and publish it; peers pick it up within seconds")
    .option('--network <name>', 'only this network (default: every network of this host that has keys)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--json', 'print JSON')
    .action(async (o) => {
      const done = await callAgent<Array<{ network: string; subnet: string; backendData: Record<string, unknown> }>>(
        o.api,
        'POST',
        '/rotate-keys',
        o.network ? { network: o.network } : {},
        { timeoutMs: 30_000 },
      );
      if (o.json) printJson(done);
      else printTable(['network', 'subnet', 'new public key'], done.map((d) => [d.network, d.subnet, String(d.backendData.PublicKey ?? '-')]));
    });
}
