import type { ResolvedContainer } from '../../agent/endpoints.js';
import { DockerApi } from './docker-api.js';

/** For `weft attach <docker container>`: a Docker container id or name → its network namespace (by PID). */
export function dockerContainerResolver(docker = new DockerApi()): (container: string) => Promise<ResolvedContainer | undefined> {
  return async (container) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(container)) return undefined;
    const c = await docker.containerPid(container).catch(() => undefined);
    return c ? { netns: { pid: c.pid }, key: `docker:${c.id.slice(0, 12)}` } : undefined;
  };
}
