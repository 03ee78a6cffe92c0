import * as path from 'node:path';
import { AgentDockerOps, type AgentLike } from './agent-ops.js';
import { DEFAULT_DOCKER_SOCKET, DockerApi, DockerApiError } from './docker-api.js';
import { DEFAULT_PLUGIN_DIR, DEFAULT_PLUGIN_NAME, DockerPlugin } from './plugin.js';
import { FileStateStore } from './state.js';
import { DockerNetworkSync } from './sync.js';
import { dockerEndpointSource } from './endpoint-source.js';

export { DockerPlugin, type DockerBackendOps } from './plugin.js';
export { AgentDockerOps } from './agent-ops.js';
export { DockerApi } from './docker-api.js';

export interface DockerIntegrationOptions {
  /** Plugin name (`-d NAME`, socket NAME.sock); default weft. */
  pluginName?: string;
  /** Where dockerd looks for plugin sockets; default /run/docker/plugins. */
  pluginDir?: string;
  /** dockerd's API socket (for network names and cross-host sync); default $DOCKER_HOST or /var/run/docker.sock. */
  dockerSocket?: string;
  /** The agent's state dir: the plugin's state goes to <stateDir>/docker-plugin.json. */
  stateDir: string;
  /** Create/remove Docker networks made on other hosts (default true). */
  sync?: boolean;
  log?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

export interface DockerIntegration {
  plugin: DockerPlugin;
  ops: AgentDockerOps;
  sync?: DockerNetworkSync;
  stop(): Promise<void>;
}

/** Serves the Docker plugin for this agent and keeps Docker networks in step across hosts. */
export async function startDockerIntegration(agent: AgentLike, o: DockerIntegrationOptions): Promise<DockerIntegration> {
  const docker = new DockerApi(o.dockerSocket ?? DEFAULT_DOCKER_SOCKET);
  const ops = new AgentDockerOps(agent, { docker });
  const plugin = new DockerPlugin({
    ops,
    state: new FileStateStore(path.join(o.stateDir, 'docker-plugin.json')),
    name: o.pluginName ?? DEFAULT_PLUGIN_NAME,
    pluginDir: o.pluginDir ?? DEFAULT_PLUGIN_DIR,
    ...(o.log ? { log: o.log } : {}),
  });
  await plugin.start();
  // Containers removed while the plugin was down (Docker gave up calling it): ports, veth and address freed.
  void plugin
    .pruneStaleEndpoints(async (ep) => {
      try {
        const net = await docker.inspectNetwork(ep.networkId);
        return Object.values(net.Containers ?? {}).some((c) => (c as { EndpointID?: string }).EndpointID === ep.id);
      } catch (err) {
        return err instanceof DockerApiError && err.status === 404 ? false : undefined;
      }
    })
    .catch((err) => o.log?.warn({ err: (err as Error).message }, 'cannot check the plugin\'s endpoints against Docker'));
  // Docker's containers in `weft ps` and `weft status`
  agent.endpointSources?.push(
    dockerEndpointSource({
      hostId: agent.hostId,
      endpoints: () => plugin.endpointRecords(),
      docker,
      recordedInStore: (n) => agent.runners.get(n)?.module.wantsEndpoints === true,
    }),
  );
  let sync: DockerNetworkSync | undefined;
  if (o.sync ?? true) {
    sync = new DockerNetworkSync(agent.store, docker, plugin.name, o.log);
    sync.start();
  }
  return {
    plugin,
    ops,
    sync,
    stop: async () => {
      await sync?.stop();
      await plugin.stop();
    },
  };
}

export { dockerContainerResolver } from './resolve.js';
