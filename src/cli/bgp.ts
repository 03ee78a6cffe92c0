import '../backends/all.js';
import type { Command } from 'commander';
import { addPeer, listPeers, parseAsn, removePeer } from '../backends/bgp/peers.js';
import { getNetwork } from '../config/registry.js';
import { isIPv4 } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';
import { STORE_HELP, withStore } from './network.js';
import { printJson, printTable } from './output.js';

/** `weft bgp peer add|rm|ls` — external BGP peers (a top-of-rack router) in the store; every agent follows them. */

function ipArg(ip: string): string {
  if (!isIPv4(ip)) throw new WeftError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  return ip;
}

export function registerBgp(program: Command): void {
  const bgp = program.command('bgp').description('BGP settings of the bgp backend');
  const peer = bgp.command('peer').description('external BGP peers (e.g. a top-of-rack router) every host peers with');

  peer
    .command('add')
    .description('peer every host (of one network, or of every bgp network) with a router')
    .argument('<ip>', "the router's address on the hosts' underlay segment")
    .argument('<as>', "the router's AS number")
    .option('--network <name>', 'only this bgp network (default: every bgp network)')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (ip: string, as: string, o) => {
      const rec = { ip: ipArg(ip), asn: parseAsn(as), ...(o.network ? { network: String(o.network) } : {}) };
      await withStore(o.store, async (store) => {
        if (rec.network) {
          const config = await getNetwork(store, rec.network);
          if (config.Backend.Type !== 'bgp') throw new WeftError(`network ${rec.network} uses the ${config.Backend.Type} backend, not bgp`);
        }
        const saved = await addPeer(store, rec);
        if (o.json) return printJson(saved);
        process.stdout.write(`BGP peer ${saved.ip} AS ${saved.asn} added for ${saved.network ? `network ${saved.network}` : 'every bgp network'}: the agents reconfigure bird\n`);
      });
    });

  peer
    .command('rm')
    .description('remove an external BGP peer')
    .argument('<ip>', "the router's address")
    .option('--store <url>', STORE_HELP)
    .action(async (ip: string, o) => {
      await withStore(o.store, async (store) => {
        if (!(await removePeer(store, ipArg(ip)))) throw new WeftError(`no BGP peer ${ip} (see weft bgp peer ls)`);
        process.stdout.write(`BGP peer ${ip} removed: the agents close their sessions with it\n`);
      });
    });

  peer
    .command('ls')
    .description('list external BGP peers')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (o) => {
      await withStore(o.store, async (store) => {
        const peers = await listPeers(store);
        if (o.json) return printJson(peers);
        printTable(['peer', 'as', 'network'], peers.map((p) => [p.ip, p.asn, p.network ?? '(every bgp network)']));
      });
    });
}
