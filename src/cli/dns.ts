import type { Command } from 'commander';
import { callAgent, DEFAULT_API_SOCKET } from '../agent/client.js';
import type { AgentStatus } from '../agent/types.js';
import { getNetwork } from '../config/registry.js';
import { localPart } from '../dns/answer.js';
import { normalizeName, type DnsRecord } from '../dns/records.js';
import { listRecords, putRecord, removeRecords } from '../dns/registry.js';
import { DEFAULT_DNS_DOMAIN } from '../dns/service.js';
import { listNetworkNames } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { STORE_HELP, withStore } from './network.js';
import { printJson, printTable } from './output.js';

/** `weft dns-add|dns-remove|dns-lookup`: a network's DNS records in the store (no agent needed). */

/** The named network, or the only one in the store. */
async function pickNetwork(store: Store, name: string | undefined): Promise<string> {
  if (name) {
    await getNetwork(store, name); // unknown network: WeftError listing the known ones
    return name;
  }
  const all = await listNetworkNames(store);
  if (all.length === 1) return all[0]!;
  throw new WeftError(all.length ? `several networks (${all.join(', ')}): say which with --network` : 'no network yet: create one with `weft network create`');
}

/** "web", "web.weft.local" or "web.weft.local." → "web". */
function bareName(name: string, domain: string): string {
  const n = normalizeName(name);
  const local = localPart(n, normalizeName(domain));
  if (local === '') throw new WeftError(`${name} is the domain itself, not a name in it`);
  return local ?? n;
}

type Row = DnsRecord & { network: string };

function printRecords(rows: Row[], json: boolean, domain: string): void {
  if (json) return printJson(rows);
  printTable(
    ['name', 'ip', 'network', 'host', 'container', 'source'],
    rows.map((r) => [`${r.name}.${domain}`, r.ip, r.network, r.hostId, r.container, r.source]),
  );
}

export function registerDns(program: Command): void {
  program
    .command('dns-add')
    .description('add a DNS record NAME → IP to a network (several IPs for one name: round-robin)')
    .argument('<name>', 'name, with or without the domain')
    .argument('<ip>', 'IPv4 address')
    .option('--network <name>', 'network (default: the only one)')
    .option('--domain <domain>', 'the agents\' --dns-domain', DEFAULT_DNS_DOMAIN)
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (name: string, ip: string, o) => {
      await withStore(o.store, async (store) => {
        const network = await pickNetwork(store, o.network);
        const rec = await putRecord(store, network, { name: bareName(name, o.domain), ip, source: 'manual' });
        if (o.json) printJson({ ...rec, network });
        else process.stdout.write(`${rec.name}.${normalizeName(o.domain)} → ${rec.ip} (network ${network})\n`);
      });
    });

  program
    .command('dns-remove')
    .description('remove the DNS records of NAME (only NAME → IP when IP is given), whoever added them')
    .argument('<name>')
    .argument('[ip]')
    .option('--network <name>', 'network (default: the only one)')
    .option('--domain <domain>', 'the agents\' --dns-domain', DEFAULT_DNS_DOMAIN)
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (name: string, ip: string | undefined, o) => {
      await withStore(o.store, async (store) => {
        const network = await pickNetwork(store, o.network);
        const n = bareName(name, o.domain);
        const gone = await removeRecords(store, network, n, ip);
        if (gone.length === 0) throw new WeftError(`no DNS record ${n}${ip ? ` → ${ip}` : ''} in network ${network}`);
        if (o.json) printJson(gone.map((r) => ({ ...r, network })));
        else for (const r of gone) process.stdout.write(`removed ${r.name} → ${r.ip} (network ${network})\n`);
      });
    });

  program
    .command('dns-lookup')
    .description('show the DNS records of NAME in the store, in every network (or one)')
    .argument('<name>')
    .option('--network <name>', 'only this network')
    .option('--domain <domain>', 'the agents\' --dns-domain', DEFAULT_DNS_DOMAIN)
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      await withStore(o.store, async (store) => {
        const n = bareName(name, o.domain);
        const networks = o.network ? [await pickNetwork(store, o.network)] : await listNetworkNames(store);
        const rows: Row[] = [];
        for (const network of networks) for (const r of await listRecords(store, network, n)) rows.push({ ...r, network });
        if (rows.length === 0) throw new WeftError(`${n}.${normalizeName(o.domain)}: no such name${o.network ? ` in network ${o.network}` : ''}`);
        printRecords(rows, !!o.json, normalizeName(o.domain));
      });
    });

  program
    .command('dns-args')
    .description("print `docker run` options that point a container at this host's weft DNS (Weave's dns-args): docker run $(weft dns-args) ...")
    .option('--network <name>', 'the network the container joins (default: the host\'s only DNS-serving network)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .action(async (o: { network?: string; api: string }) => {
      process.stdout.write(`${dnsArgs(await callAgent<AgentStatus>(o.api, 'GET', '/status'), o.network)}\n`);
    });
}

/** `--dns=GATEWAY --dns-search=DOMAIN` for a network this agent serves DNS on. */
export function dnsArgs(st: AgentStatus, network?: string): string {
  const served = st.dns?.networks ?? [];
  if (served.length === 0) throw new WeftError('this agent serves no DNS (started with --no-dns, or no network joined yet)');
  const name = network ?? (served.length === 1 ? served[0]! : undefined);
  if (name === undefined) throw new WeftError(`DNS is served on several networks (${served.join(', ')}): say which with --network`);
  const gateway = served.includes(name) ? st.networks.find((n) => n.name === name)?.gateway : undefined;
  if (!gateway) throw new WeftError(`this agent serves no DNS on network ${name} (it serves ${served.join(', ')})`);
  return `--dns=${gateway} --dns-search=${st.dns!.domain}`;
}
