/**
 * A weft agent with the Docker integration, as one process:
 *   node dist/src/adapters/docker/main.js --store URL --state-dir DIR --api SOCK [--iface IF] [--host-id ID]
 *        [--plugin-name weft] [--plugin-dir /run/docker/plugins] [--docker-host unix:///var/run/docker.sock]
 * (`weft agent --docker` does the same once the agent command grows the flag; tests run this directly.)
 * Prints "ready" on stdout once the agent and the plugin listen; SIGTERM stops both (data plane stays).
 */
import { parseArgs } from 'node:util';
import { Agent } from '../../agent/agent.js';
import { log } from '../../util/log.js';
import { DockerApi } from './docker-api.js';
import { dockerContainerResolver, startDockerIntegration } from './index.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string' },
    'state-dir': { type: 'string' },
    api: { type: 'string' },
    iface: { type: 'string' },
    'public-ip': { type: 'string' },
    'host-id': { type: 'string' },
    'plugin-name': { type: 'string' },
    'plugin-dir': { type: 'string' },
    'docker-host': { type: 'string' },
    'lease-ttl': { type: 'string' },
  },
});

const stateDir = values['state-dir'] ?? '/var/lib/weft';
const dockerSocket = values['docker-host']?.replace(/^unix:\/\//, '');
const docker = new DockerApi(dockerSocket);
try {
  const agent = await Agent.start({
    storeUrl: values.store,
    stateDir,
    api: values.api ?? '/run/weft/weft.sock',
    ...(values.iface ? { iface: values.iface } : {}),
    ...(values['public-ip'] ? { publicIp: values['public-ip'] } : {}),
    ...(values['host-id'] ? { hostId: values['host-id'] } : {}),
    ...(values['lease-ttl'] ? { leaseTtlSeconds: Number(values['lease-ttl']) } : {}),
    // weft's accept rules hang off FORWARD: Docker's own FORWARD rules only match its bridges, so they
    // reach weft's before Docker's DROP policy whichever of the two started first (DOCKER-USER exists only
    // once dockerd ran).
    resolvers: [dockerContainerResolver(docker)],
  });
  const docks = await startDockerIntegration(agent, {
    stateDir,
    ...(values['plugin-name'] ? { pluginName: values['plugin-name'] } : {}),
    ...(values['plugin-dir'] ? { pluginDir: values['plugin-dir'] } : {}),
    ...(dockerSocket ? { dockerSocket } : {}),
    log,
  });
  process.stdout.write(`ready ${docks.plugin.socketPath}\n`);
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await docks.stop().catch((err) => log.error({ err }, 'stopping the docker plugin failed'));
    await agent.stop().catch((err) => log.error({ err }, 'stopping the agent failed'));
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
} catch (err) {
  process.stderr.write(`weft: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
