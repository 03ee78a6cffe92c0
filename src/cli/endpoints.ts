import type { Command } from 'commander';
import { callAgent, DEFAULT_API_SOCKET } from '../agent/client.js';
import type { AgentStatus, Endpoint } from '../agent/types.js';
import { timeoutMs, timeoutOption } from './options.js';
import { formatTable, printJson, printTable } from './output.js';

/** `weft attach|detach|ps|status`: clients of the local agent's API. */
export function registerEndpoints(program: Command): void {
  program
    .command('attach')
    .description('connect a container (netns name, /proc/PID/ns/net, PID or Docker id/name) to a network')
    .argument('<container>')
    .argument('[address]', 'IP or IP/LEN inside this host\'s subnet (default: next free)')
    .option('--network <name>', 'network (default: the host\'s only network, else the one created with --default)')
    .option('--name <dnsname>', 'DNS name')
    .option('--ifname <if>', 'interface name in the container (default eth0, else ethweN)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (container: string, address: string | undefined, o) => {
      const ep = await callAgent<Endpoint>(o.api, 'POST', '/attach', {
        container,
        address,
        network: o.network,
        name: o.name,
        ifname: o.ifname,
      }, { timeoutMs: timeoutMs(o), checkWith: `weft ps --api ${o.api}` });
      if (o.json) printJson(ep);
      else process.stdout.write(`${ep.address}\n`);
    });

  program
    .command('detach')
    .description('disconnect a container and free its address')
    .argument('<container>')
    .option('--network <name>', 'only this network (default: all)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (container: string, o) => {
      const eps = await callAgent<Endpoint[]>(o.api, 'POST', '/detach', { container, network: o.network }, { timeoutMs: timeoutMs(o), checkWith: `weft ps --api ${o.api}` });
      if (o.json) printJson(eps);
      else for (const ep of eps) process.stdout.write(`detached ${ep.container} from ${ep.network} (${ep.address})\n`);
    });

  program
    .command('ps')
    .description('containers attached on this host')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (o) => {
      const eps = await callAgent<Endpoint[]>(o.api, 'GET', '/endpoints', undefined, { timeoutMs: timeoutMs(o) });
      if (o.json) return printJson(eps);
      printTable(
        ['container', 'id', 'runtime', 'network', 'ip', 'mac', 'interface', 'name', 'ports'],
        eps.map((e) => [e.container, e.id.slice(0, 12), e.runtime ?? 'weft', e.network, e.address, e.mac, e.ifname, e.name, e.ports?.join(',')]),
      );
    });

  program
    .command('status')
    .description('this host\'s leases, backends and peers')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (o) => {
      const st = await callAgent<AgentStatus>(o.api, 'GET', '/status', undefined, { timeoutMs: timeoutMs(o) });
      if (o.json) return printJson(st);
      process.stdout.write(formatStatus(st));
    });
}

const ago = (ms: number) => (ms < 0 ? `in ${fmtSecs(-ms)}` : `${fmtSecs(ms)} ago`);
const fmtSecs = (ms: number) => {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
};

/** `weft status` for humans: this host, its store, each network with its lease, backend and peers. */
export function formatStatus(st: AgentStatus): string {
  const now = st.now ?? Date.now();
  const out: string[] = [];
  out.push(`host ${st.hostId}  underlay ${st.iface} ${st.publicIp}  endpoints ${st.endpoints ?? '?'}${st.ui ? `  ui ${st.ui}` : ''}`);
  if (st.store) out.push(`store ${st.store.url}  ${st.store.healthy ? `ok${st.store.latencyMs !== undefined ? ` (${st.store.latencyMs} ms)` : ''}` : `UNREACHABLE: ${st.store.error ?? '?'}`}`);
  for (const n of st.networks) {
    const backend = n.status ? `${n.backend} ${n.status.healthy ? 'healthy' : 'UNHEALTHY'}${n.status.detail ? ` (${n.status.detail})` : ''}` : n.backend;
    const lease = n.leaseExpiresAt !== undefined ? `lease ${n.subnet} expires ${ago(now - n.leaseExpiresAt)}` : `lease ${n.subnet}`;
    out.push('');
    out.push(`network ${n.name}: ${lease}; backend ${backend}; MTU ${n.mtu}${n.bridge ? `; bridge ${n.bridge}` : ''}${n.gateway ? ` gw ${n.gateway}` : ''}; endpoints ${n.endpoints ?? '?'}${n.ipam ? ` (IPAM ${n.ipam.used}/${n.ipam.size} used)` : ''}`);
    if (n.error) out.push(`! ${n.error}`);
    out.push(
      formatTable(
        ['peer', 'subnet', 'underlay', 'backend data', 'last seen', 'reachable'],
        n.peers.map((p) => [
          p.hostId ?? '-',
          p.subnet,
          p.publicIp,
          p.backendData ? Object.entries(p.backendData).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' ') : '',
          p.lastSeen !== undefined ? ago(now - p.lastSeen) : '-',
          p.reachable === undefined ? '?' : p.reachable ? 'yes' : 'NO',
        ]),
      ).trimEnd(),
    );
    // sessions a backend reports (bgp): one row each
    const sessions = Array.isArray(n.status?.sessions) ? (n.status.sessions as Array<Record<string, unknown>>) : [];
    if (sessions.length) {
      out.push(formatTable(['session', 'kind', 'state', 'info'], sessions.map((x) => [String(x.peer), String(x.kind ?? ''), String(x.state), String(x.lastError ?? x.info ?? '')])).trimEnd());
    }
  }
  for (const [name, why] of Object.entries(st.failed ?? {})) out.push(`! ${name}: not joined: ${why}`);
  return out.join('\n') + '\n';
}
