import { InvalidArgumentError, type Command } from 'commander';
import { Agent } from '../agent/agent.js';
import { callAgent, DEFAULT_API_SOCKET, DEFAULT_STATE_DIR, NO_AGENT } from '../agent/client.js';
import { resetHost } from '../agent/reset.js';
import { DockerApi } from '../adapters/docker/docker-api.js';
import { dockerContainerResolver } from '../adapters/docker/resolve.js';
import { WeftError } from '../util/errors.js';
import { log } from '../util/log.js';
import { printJson } from './output.js';
import { addEtcdTlsFlags } from './store-flags.js';

/** `weft agent` (the per-host daemon, foreground) and `weft reset`. */
export function registerAgent(program: Command): void {
  addEtcdTlsFlags(program.command('agent'))
    .description('run the per-host daemon in the foreground')
    .option('--store <url>', 'store URL (sqlite:///path or etcd://host:port[/prefix]); default $WEFT_STORE or sqlite:///var/lib/weft/weft.db')
    .option('--iface <if>', 'underlay interface (default: the default route\'s)')
    .option('--public-ip <ip>', 'address peers reach this host on')
    .option('--state-dir <dir>', 'where host id, bridge names and subnet.env live', DEFAULT_STATE_DIR)
    .option('--api <sock>', 'unix socket of the API', DEFAULT_API_SOCKET)
    .option('--host-id <id>', 'stable host identity (default /etc/machine-id)')
    .option('--network <name...>', 'join only these networks (default: all, including ones created later)')
    .option('--lease-ttl <seconds>', 'subnet lease TTL', toInt)
    .option('--grace <seconds>', 'how long an expired subnet stays reserved for its holder', toInt)
    .option('--ip-masq', 'masquerade traffic leaving the network')
    .option('--docker', 'also serve Docker\'s network and IPAM plugin protocol (docker network create -d weft)')
    .option('--docker-plugin-name <name>', 'plugin name (-d NAME, socket NAME.sock)', 'weft')
    .option('--docker-plugin-dir <dir>', 'where dockerd finds plugin sockets', '/run/docker/plugins')
    .option('--docker-host <url>', 'dockerd API (default $DOCKER_HOST or unix:///var/run/docker.sock)')
    .action(async (o) => {
      const dockerSocket: string | undefined = o.dockerHost?.replace(/^unix:\/\//, '');
      const agent = await Agent.start({
        storeUrl: o.store,
        iface: o.iface,
        publicIp: o.publicIp,
        stateDir: o.stateDir,
        api: o.api,
        hostId: o.hostId,
        networks: o.network,
        leaseTtlSeconds: o.leaseTtl,
        graceSeconds: o.grace,
        ipMasq: o.ipMasq,
        // `weft attach <docker container>` works whenever a Docker API answers
        resolvers: [dockerContainerResolver(new DockerApi(dockerSocket))],
      });
      const docker = o.docker
        ? await (await import('../adapters/docker/index.js')).startDockerIntegration(agent, {
            stateDir: o.stateDir,
            pluginName: o.dockerPluginName,
            pluginDir: o.dockerPluginDir,
            ...(dockerSocket ? { dockerSocket } : {}),
            log,
          })
        : undefined;
      process.stdout.write(`ready api=${o.api}${docker ? ` docker-plugin=${docker.plugin.socketPath}` : ''}\n`);
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          log.info({ signal: sig }, 'stopping; the data plane stays in place');
          Promise.resolve(docker?.stop())
            .catch((err) => log.error({ err }, 'stopping the Docker plugin failed'))
            .then(() => agent.stop())
            .finally(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });

  addEtcdTlsFlags(program.command('reset'))
    .description('remove everything weft made on this host and give its leases back')
    .option('--api <sock>', 'unix socket of the running agent', DEFAULT_API_SOCKET)
    .option('--store <url>', 'store URL, when no agent runs')
    .option('--state-dir <dir>', 'state dir, when no agent runs', DEFAULT_STATE_DIR)
    .option('--host-id <id>', 'host identity, when no agent runs')
    .option('--json', 'print JSON')
    .action(async (o) => {
      let result: unknown;
      try {
        result = await callAgent(o.api, 'POST', '/reset');
      } catch (err) {
        if (!(err instanceof WeftError && err.code === NO_AGENT)) throw err;
        result = await resetHost({ storeUrl: o.store, stateDir: o.stateDir, hostId: o.hostId });
      }
      if (o.json) printJson(result);
      else process.stdout.write(`reset: removed weft's devices, rules and leases on this host\n`);
    });
}

export function toInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got "${v}"`);
  return n;
}
