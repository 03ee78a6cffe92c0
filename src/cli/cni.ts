import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_API_SOCKET } from '../agent/client.js';
import { ensureShim } from '../adapters/cni/shim-build.js';
import { checkName } from '../store/layout.js';
import { printJson } from './output.js';

/** `weft install-cni`: puts the weft-cni executable where a runtime looks for plugins, plus an example conflist. */
export function registerCni(program: Command): void {
  program
    .command('install-cni')
    .description('install the weft-cni plugin executable into a CNI bin dir and write an example conflist')
    .requiredOption('--dir <dir>', 'CNI plugin directory (e.g. /opt/cni/bin)')
    .option('--conf-dir <dir>', 'also write an example conflist here (e.g. /etc/cni/net.d)')
    .option('--network <name>', 'weft network the conflist attaches to', 'weft')
    .option('--name <name>', 'name of the network configuration (default: the network name)')
    .option('--agent-socket <sock>', 'agent API socket, when not the default', DEFAULT_API_SOCKET)
    .option('--link', 'symlink the executable instead of copying it')
    .option('--json', 'print JSON')
    .action((o) => {
      const network = checkName('network name', o.network);
      const shim = ensureShim();
      fs.mkdirSync(o.dir, { recursive: true, mode: 0o755 });
      const target = path.join(o.dir, 'weft-cni');
      // Placed beside and renamed over: a runtime may be executing the old file right now.
      const tmp = `${target}.${process.pid}.tmp`;
      if (o.link) fs.symlinkSync(shim, tmp);
      else {
        fs.copyFileSync(shim, tmp);
        fs.chmodSync(tmp, 0o755);
      }
      fs.renameSync(tmp, target);
      const out: { plugin: string; conflist?: string } = { plugin: target };
      if (o.confDir) {
        const name = checkName('network name', o.name ?? network);
        const conflist = exampleConflist(name, network, o.agentSocket);
        fs.mkdirSync(o.confDir, { recursive: true, mode: 0o755 });
        out.conflist = path.join(o.confDir, `10-weft-${name}.conflist`);
        fs.writeFileSync(`${out.conflist}.tmp`, `${JSON.stringify(conflist, null, 2)}\n`, { mode: 0o644 });
        fs.renameSync(`${out.conflist}.tmp`, out.conflist);
      }
      if (o.json) printJson(out);
      else process.stdout.write(`installed ${out.plugin}${out.conflist ? `\nwrote ${out.conflist}` : ''}\n`);
    });
}

/** weft attaches (address, veth, route); portmap handles `-p` from the runtime's port mappings. */
export function exampleConflist(name: string, network: string, agentSocket: string): Record<string, unknown> {
  return {
    // 1.0.0, not weft's 1.1.0: Debian's reference plugins (containernetworking-plugins 1.1) stop at 1.0.0
    cniVersion: '1.0.0',
    name,
    plugins: [
      // aliases: the runtime passes `--network-alias` names (runtimeConfig.aliases), registered in weft's DNS
      { type: 'weft-cni', network, ...(agentSocket !== DEFAULT_API_SOCKET ? { agentSocket } : {}), capabilities: { aliases: true } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}
