import { InvalidArgumentError, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Agent } from '../agent/agent.js';
import { callAgent, DEFAULT_API_SOCKET, DEFAULT_STATE_DIR, NO_AGENT } from '../agent/client.js';
import { resetHost, resetMessage } from '../agent/reset.js';
import type { ResolvedContainer } from '../agent/endpoints.js';
import { cniRoutes } from '../adapters/cni/agent-routes.js';
import { WeftError } from '../util/errors.js';
import { log } from '../util/log.js';
import { timeoutMs, timeoutOption } from './options.js';
import { printJson } from './output.js';
import { addEtcdTlsFlags } from './store-flags.js';
import { DEFAULT_RESYNC_SECONDS } from '../config/network.js';

/** `weft agent` (the per-host daemon, foreground) and `weft reset`. */
export function registerAgent(program: Command): void {
  addEtcdTlsFlags(program.command('agent'))
    .description('run the per-host daemon in the foreground')
    .option('--store <url>', 'store URL (sqlite:///path or etcd://host:port[/prefix]); default $WEFT_STORE or sqlite:///var/lib/weft/weft.db')
    .option('--iface <if>', 'underlay interface (default: the default route\'s)')
    .option('--public-ip <ip>', 'address peers reach this host on')
    .option('--state-dir <dir>', 'where host id, bridge names and subnet.env live', DEFAULT_STATE_DIR)
    .option('--api <sock>', 'unix socket of the API', DEFAULT_API_SOCKET)
    .option('--api-group <group>', 'group allowed to use the API socket (mode 0660; default: root only)')
    .option('--host-id <id>', 'stable host identity (default /etc/machine-id)')
    .option('--network <name...>', 'join only these networks (default: all, including ones created later)')
    .option('--lease-ttl <seconds>', 'subnet lease TTL', toInt)
    .option('--grace <seconds>', 'how long an expired subnet stays reserved for its holder', toInt)
    .option('--host-record-ttl <duration>', "how long a host's record (hosts/<id>) outlives its lease and grace before the store drops it: seconds, or 90m, 12h, 7d (default 7d)", parseDurationSeconds)
    .option('--resync <seconds>', `full reconcile against the kernel (routes, rules, endpoints) every N seconds (default ${DEFAULT_RESYNC_SECONDS})`, toInt)
    .option('--ip-masq', 'masquerade traffic leaving the network')
    .option('--dns-domain <domain>', 'domain of container names served on each network\'s gateway', 'weft.local')
    .option('--dns-upstream <addr...>', 'where other names are forwarded, IP[:PORT] each (default: nameservers of /etc/resolv.conf)')
    .option('--dns-ttl <seconds>', 'TTL of weft\'s DNS answers', toInt, 30)
    .option('--no-dns', 'run no DNS server (names given with --name are still registered)')
    .option('--docker', 'also serve Docker\'s network and IPAM plugin protocol (docker network create -d weft)')
    .option('--docker-plugin-name <name>', 'plugin name (-d NAME, socket NAME.sock)', 'weft')
    .option('--docker-plugin-dir <dir>', 'where dockerd finds plugin sockets', '/run/docker/plugins')
    .option('--docker-host <url>', 'dockerd API (default $DOCKER_HOST or unix:///var/run/docker.sock)')
    .option('--metrics-addr <host:port>', 'also serve Prometheus GET /metrics on TCP (it is always on the API socket)')
    .option('--ui-addr <addr>', 'web map: HOST:PORT, unix:/path, or "off" (beyond loopback it needs the token `weft ui` prints)', '127.0.0.1:9403')
    .action(async (o) => {
      // Signals are handled from the first moment: a SIGTERM while the agent starts lets the start finish
      // (or fail) and then stops what it made, instead of killing it half-way (Node's default).
      let signalled: ((sig: string) => void) | undefined;
      const signal = new Promise<string>((resolve) => (signalled = resolve));
      let early: string | undefined;
      const onSignal = (sig: string) => () => {
        early ??= sig;
        signalled?.(sig);
      };
      const onTerm = onSignal('SIGTERM');
      const onInt = onSignal('SIGINT');
      process.once('SIGTERM', onTerm);
      process.once('SIGINT', onInt);
      const dockerSocket: string | undefined = o.dockerHost?.replace(/^unix:\/\//, '');
      // Docker's API client is loaded the first time a container name is not a namespace or a PID.
      const dockerResolver = async (container: string): Promise<ResolvedContainer | undefined> => {
        const [{ DockerApi }, { dockerContainerResolver }] = await Promise.all([import('../adapters/docker/docker-api.js'), import('../adapters/docker/resolve.js')]);
        return dockerContainerResolver(new DockerApi(dockerSocket))(container);
      };
      const agent = await Agent.start({
        storeUrl: o.store,
        iface: o.iface,
        publicIp: o.publicIp,
        stateDir: o.stateDir,
        api: o.api,
        ...(o.apiGroup ? { apiGid: groupId(o.apiGroup) } : {}),
        hostId: o.hostId,
        networks: o.network,
        leaseTtlSeconds: o.leaseTtl,
        ...(o.resync ? { resyncSeconds: o.resync } : {}),
        graceSeconds: o.grace,
        ...(o.hostRecordTtl !== undefined ? { hostRecordSeconds: o.hostRecordTtl } : {}),
        ipMasq: o.ipMasq,
        dns: {
          enabled: o.dns,
          domain: o.dnsDomain,
          ttl: o.dnsTtl,
          // the upstream client (dns-packet) loads only when it is used
          ...(o.dnsUpstream ? { upstreams: (o.dnsUpstream as string[]).map((await import('../dns/upstream.js')).parseUpstream) } : {}),
        },
        // `weft attach <docker container>` works whenever a Docker API answers
        resolvers: [dockerResolver],
        routes: cniRoutes, // POST /cni: what the weft-cni executable forwards
        metricsAddr: o.metricsAddr,
      });
      // `weft doctor --all`: this agent answers doctor requests found in the store (src/doctor/cluster.ts);
      // the checks themselves are loaded when a request comes
      const { answerDoctorRequests } = await import('../doctor/cluster.js');
      const doctorWatch = answerDoctorRequests(
        agent.store,
        agent.hostId,
        async () => {
          const { runDoctor } = await import('../doctor/index.js');
          const r = await runDoctor({ api: o.api, storeUrl: agent.store.url });
          return { ok: r.ok, findings: r.findings, publicIp: agent.underlay.ip };
        },
        log,
      );
      const docker = o.docker
        ? await (await import('../adapters/docker/index.js')).startDockerIntegration(agent, {
            stateDir: o.stateDir,
            pluginName: o.dockerPluginName,
            pluginDir: o.dockerPluginDir,
            ...(dockerSocket ? { dockerSocket } : {}),
            log,
          })
        : undefined;
      if (!early) process.stdout.write(`ready api=${o.api}${docker ? ` docker-plugin=${docker.plugin.socketPath}` : ''}\n`);
      // bin/weft's code cache (bin/code-cache.cjs) is saved now, with start-up's functions compiled, and before
      // the flag below changes (V8 refuses a cache made under other flags)
      const saveCodeCache = (globalThis as Record<symbol, unknown>)[Symbol.for('weft.saveCodeCache')];
      if (typeof saveCodeCache === 'function') saveCodeCache();
      // bin/weft starts the agent without TurboFan (start-up code runs once; its optimized code stayed resident)
      if ((globalThis as Record<symbol, unknown>)[Symbol.for('weft.optAtReady')]) setFlagsFromString('--opt');
      // the web map is a convenience: it starts after the agent is ready, and a taken port must not stop the network
      const ui = o.uiAddr === 'off' || early ? undefined : (await import('../ui/server.js')).startUi(agent, { addr: o.uiAddr, stateDir: o.stateDir, log }).catch((err) => {
        log.warn({ err: (err as Error).message, addr: o.uiAddr }, 'web map not started');
        return undefined;
      });
      const sig = await signal;
      log.info({ signal: sig }, 'stopping; the data plane stays in place');
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      await Promise.resolve(docker?.stop()).catch((err) => log.error({ err }, 'stopping the Docker plugin failed'));
      doctorWatch.close();
      await (await ui)?.close();
      await agent.stop();
      // Everything the agent owns is stopped. A connect still pending to a store that drops SYNs would hold
      // the process for minutes: exit a moment later if such a stray handle is all that keeps it alive.
      setTimeout(() => process.exit(process.exitCode ?? 0), 1000).unref();
    });

  addEtcdTlsFlags(program.command('reset'))
    .description('remove everything weft made on this host and give its leases back')
    .option('--api <sock>', 'unix socket of the running agent', DEFAULT_API_SOCKET)
    .option('--store <url>', 'store URL, when no agent runs')
    .option('--state-dir <dir>', 'state dir, when no agent runs', DEFAULT_STATE_DIR)
    .option('--host-id <id>', 'host identity, when no agent runs')
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (o) => {
      let result: unknown;
      try {
        result = await callAgent(o.api, 'POST', '/reset', undefined, { timeoutMs: timeoutMs(o), checkWith: `weft status --api ${o.api}` });
      } catch (err) {
        if (!(err instanceof WeftError && err.code === NO_AGENT)) throw err;
        result = await resetHost({ storeUrl: o.store, stateDir: o.stateDir, hostId: o.hostId });
      }
      const said = resetMessage(result as { left?: string[] });
      if (o.json) printJson(result);
      else if (said.ok) process.stdout.write(`${said.text}\n`);
      else process.stderr.write(`${said.text}\n`);
      if (!said.ok) process.exitCode = 1;
    });
}

/** A group name (from /etc/group) or number, as its gid. */
export function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    /* no group file: only numbers work */
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new WeftError(`--api-group: no group "${group}" in /etc/group (pass a name or a number)`);
}

/** Longest --host-record-ttl: ten years (a store TTL must stay a sane number of seconds). */
export const MAX_HOST_RECORD_SECONDS = 3650 * 24 * 3600;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** A duration flag: whole seconds ("3600") or number-unit groups ("90m", "12h", "7d", "1d12h"); 0 … 3650d. */
export function parseDurationSeconds(v: string): number {
  const s = v.trim();
  let n: number | undefined;
  if (/^\d+$/.test(s)) n = Number(s);
  else if (/^(\d+[smhd])+$/.test(s)) n = [...s.matchAll(/(\d+)([smhd])/g)].reduce((t, m) => t + Number(m[1]) * UNIT_SECONDS[m[2]!]!, 0);
  if (n === undefined || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`expected a duration such as 3600, 90m, 12h or 7d, got "${v}"`);
  if (n > MAX_HOST_RECORD_SECONDS) throw new InvalidArgumentError(`"${v}" is longer than 3650d`);
  return n;
}

export function toInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got "${v}"`);
  return n;
}
