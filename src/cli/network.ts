import { SubnetRange } from '../lease/subnets.js';
import '../backends/all.js';
import { InvalidArgumentError, type Command } from 'commander';
import { checkUnderlayOverlap } from '../config/ranges.js';
import { createNetwork, getNetwork, listNetworks } from '../config/registry.js';
import { removeNetwork } from '../lease/remove-network.js';
import type { NetworkConfig } from '../config/types.js';
import { listLeases } from '../lease/leases.js';
import { allBackendOptions, backendFieldsFromOptions, backendSpec } from '../config/backend-spec.js';
import { requireBackendType } from '../config/network.js';
import { connectNetworks, disconnectNetworks, listConnections } from '../config/connections.js';
import { implementedBackends } from '../backends/registry.js';
import { openStore, type OpenStoreOptions } from '../store/index.js';
import { canonicalNetworkName, FLANNEL_NETWORK_NAME } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { readRoutes } from '../system/ops.js';
import { printJson, printTable } from './output.js';
import { addEtcdTlsFlags } from './store-flags.js';

/** `weft network create|ls|inspect|rm` — networks in the store (no agent needed). */

export const STORE_HELP = 'store URL (sqlite:///path or etcd://host:port[/prefix]); default $WEFT_STORE or sqlite:///var/lib/weft/weft.db';

function toInt(name: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number, got "${v}"`);
    return Number(v);
  };
}

export async function withStore<T>(url: string | undefined, fn: (store: Store) => Promise<T>, opts?: OpenStoreOptions): Promise<T> {
  const store = await openStore(url, opts);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** commander's property name of a flag: "ip-masq" → "ipMasq". */
function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function subnetCount(config: NetworkConfig): number {
  return new SubnetRange({ ...config, SubnetLen: config.SubnetLen! }).count;
}

/** Backend settings other than the type, e.g. `VNI=1 Port=8472`. */
function backendExtras(config: NetworkConfig): string {
  return Object.entries(config.Backend)
    .filter(([k]) => k !== 'Type')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

/**
 * This host's routes other than the default one and weft's own (bridges weftN, vxlan weft.N): its connected
 * segments and the ways to its peers, which a container network must not shadow. Empty when `ip` is missing.
 */
async function checkHostRoutes(config: NetworkConfig): Promise<void> {
  if (backendSpec(config.Backend.Type)?.sharesUnderlay) return;
  const routes = await readRoutes().catch(() => []);
  for (const r of routes) {
    if (r.dst === 'default' || /^weft/.test(r.dev ?? '')) continue;
    checkUnderlayOverlap(config.Network, [r.dst], `this host${r.dev ? ` (dev ${r.dev})` : ''}`);
  }
}

export function registerNetwork(program: Command): void {
  const network = program.command('network').description('create, list, inspect and remove networks');

  const create = network
    .command('create')
    .description('create a network in the store')
    .argument('<name>', 'network name')
    .requiredOption('--subnet <cidr>', "the whole network, e.g. 10.5.0.0/16 (flannel's Network)")
    .option('--subnet-len <n>', "prefix length of each host's subnet (default 24)", toInt('--subnet-len'))
    .option('--subnet-min <ip>', 'first subnet handed out')
    .option('--subnet-max <ip>', 'last subnet handed out')
    .option('--mtu <n>', "containers' MTU (default: the underlay's minus the backend's overhead; larger is refused when a host joins)", toInt('--mtu'))
    .option('--backend <type>', `data plane: ${implementedBackends().join(', ')} (default vxlan)`)
    .option('--ip-masq', 'masquerade traffic leaving the network')
    .option('--default', 'the network `weft attach` uses when --network is not given and a host has several')
    .option('--ignore-host-routes', "skip the check that the network overlaps none of this host's routes (when this host is no weft host)")
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON');
  // Each backend module's own options (--vni, --port, --parent, --gateway, …), read generically.
  const backendOptions = allBackendOptions();
  for (const bo of backendOptions) create.option(`--${bo.flag} <value>`, `${bo.description} [${bo.backends.join(', ')}]`);
  create.action(async (name: string, o) => {
      const type = o.backend ?? 'vxlan';
      requireBackendType(type);
      const backend: Record<string, unknown> = {
        Type: type,
        ...backendFieldsFromOptions(type, (flag) => o[camel(flag)] as string | undefined),
      };
      const input: Record<string, unknown> = { Network: o.subnet, Backend: backend };
      if (o.subnetLen !== undefined) input.SubnetLen = o.subnetLen;
      if (o.subnetMin !== undefined) input.SubnetMin = o.subnetMin;
      if (o.subnetMax !== undefined) input.SubnetMax = o.subnetMax;
      if (o.ipMasq) input.IPMasq = true;
      if (o.mtu !== undefined) input.MTU = o.mtu;
      await withStore(o.store, async (store) => {
        const config = await createNetwork(store, name, input, {
          
          default: o.default,
          // the store cannot see hosts' routes: check this host's now (each agent checks its own when it joins)
          ...(o.ignoreHostRoutes ? {} : { check: checkHostRoutes }),
        });
        if (o.json) return printJson({ name, config });
        process.stdout.write(
          `created network ${name}: ${config.Network}, ${subnetCount(config)} /${config.SubnetLen} subnets, ${config.Backend.Type} ${backendExtras(config)}`.trimEnd() + '\n',
        );
        if (store.flannelLayout && name !== FLANNEL_NETWORK_NAME) {
          process.stdout.write(`note: ${store.url} holds flannel's single network; it is listed as "${FLANNEL_NETWORK_NAME}" and found under any name\n`);
        }
      }, { create: true }); // the one command that may create a new database
    });

  network
    .command('ls')
    .description('list networks')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (o) => {
      await withStore(o.store, async (store) => {
        const rows = [];
        for (const n of await listNetworks(store)) {
          rows.push({ ...n, subnets: subnetCount(n.config), leases: (await listLeases(store, n.name)).length });
        }
        if (o.json) return printJson(rows);
        printTable(
          ['name', 'network', 'subnet-len', 'subnets', 'leases', 'backend', 'vni'],
          rows.map((r) => [r.name, r.config.Network, r.config.SubnetLen, r.subnets, r.leases, r.config.Backend.Type, r.config.Backend.VNI]),
        );
      });
    });

  network
    .command('inspect')
    .description("a network's config and its leases with their holders")
    .argument('<name>', 'network name')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      await withStore(o.store, async (store) => {
        const config = await getNetwork(store, name);
        const leases = await listLeases(store, name);
        const subnets = subnetCount(config);
        name = canonicalNetworkName(store, name);
        if (o.json) return printJson({ name, config, subnets, leases });
        const line = (k: string, v: string | number) => process.stdout.write(`${`${k}:`.padEnd(12)}${v}\n`);
        line('Name', name);
        line('Network', config.Network);
        line('SubnetLen', `${config.SubnetLen} (${subnets} subnets)`);
        if (config.SubnetMin) line('SubnetMin', config.SubnetMin);
        if (config.SubnetMax) line('SubnetMax', config.SubnetMax);
        line('Backend', `${config.Backend.Type} ${backendExtras(config)}`.trimEnd());
        line('IPMasq', String(config.IPMasq ?? false));
        if (config.Default) line('Default', 'yes (`weft attach` without --network uses it)');
        line('Leases', `${leases.length} of ${subnets}`);
        if (leases.length) {
          process.stdout.write('\n');
          printTable(
            ['subnet', 'public-ip', 'host-id', 'backend', 'expires'],
            leases.map((l) => [l.subnet, l.publicIp, l.hostId, l.backendType, l.expiresAt ? new Date(l.expiresAt).toISOString() : undefined]),
          );
        }
      });
    });

  network
    .command('rm')
    .description('remove a network (refused while hosts hold leases, unless --force)')
    .argument('<name>', 'network name')
    .option('--force', 'remove it even while leases are held')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      await withStore(o.store, async (store) => {
        await removeNetwork(store, name, { force: o.force });
        name = canonicalNetworkName(store, name);
        if (o.json) return printJson({ removed: name });
        process.stdout.write(`removed network ${name}\n`);
      });
    });

  network
    .command('connect')
    .description('let two networks reach each other (networks are isolated from each other by default)')
    .argument('<a>', 'network name')
    .argument('<b>', 'network name')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (a: string, b: string, o) => {
      await withStore(o.store, async (store) => {
        const { created } = await connectNetworks(store, a, b);
        if (o.json) return printJson({ connected: [a, b], created });
        process.stdout.write(created ? `connected ${a} and ${b}\n` : `${a} and ${b} were already connected\n`);
      });
    });

  network
    .command('disconnect')
    .description('isolate two connected networks from each other again')
    .argument('<a>', 'network name')
    .argument('<b>', 'network name')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (a: string, b: string, o) => {
      await withStore(o.store, async (store) => {
        const { removed } = await disconnectNetworks(store, a, b);
        if (o.json) return printJson({ disconnected: [a, b], removed });
        process.stdout.write(removed ? `disconnected ${a} and ${b}\n` : `${a} and ${b} were not connected\n`);
      });
    });

  network
    .command('connections')
    .description('list connected network pairs')
    .option('--store <url>', STORE_HELP)
    .option('--json', 'print JSON')
    .action(async (o) => {
      await withStore(o.store, async (store) => {
        const pairs = await listConnections(store);
        if (o.json) return printJson(pairs.map(([a, b]) => ({ a, b })));
        printTable(['network', 'network'], pairs);
      });
    });
  for (const c of network.commands) addEtcdTlsFlags(c);
}
