import { InvalidArgumentError, type Command } from 'commander';
import { implementedBackends } from '../backends/all.js';
import { DEMO_UI_PORT, demoDown, runDemo } from '../demo/demo.js';
import { printJson } from './output.js';

/** `weft demo` and `weft demo down`. */
export function registerDemo(program: Command): void {
  const demo = program
    .command('demo')
    .description('a multi-host network on this machine: hosts in namespaces, agents, containers, ping matrix')
    .option('--hosts <n>', 'hosts', count, 3)
    .option('--containers <m>', 'containers per host', count, 2)
    .option('--backend <b>', implementedBackends().join(' | '), 'vxlan')
    .option('--subnet <cidr>', 'the demo network (default 10.244.0.0/16; bridge: the hosts\' own underlay /24)')
    .option('--ui-port <port>', 'forward the live web map to this port on 127.0.0.1 (0: none)', (v) => Number(v), DEMO_UI_PORT)
    .option('--json', 'print JSON')
    .action(async (o) => {
      const result = await runDemo({
        hosts: o.hosts,
        containers: o.containers,
        backend: o.backend,
        subnet: o.subnet,
        uiPort: o.uiPort,
        progress: o.json ? undefined : (line) => process.stdout.write(line + '\n'),
      });
      if (o.json) printJson(result);
      else {
        process.stdout.write('\n' + result.matrix + '\n');
        const bad = result.pings.filter((p) => !p.ok).length;
        process.stdout.write(
          bad
            ? `${bad} of ${result.pings.length} pairs failed: try 'weft doctor --api ${result.containers[0]?.api}'\n`
            : `all ${result.pings.length} pairs answered.\n`,
        );
        const c = result.containers[0];
        const d = result.containers.at(-1);
        if (c && d) {
          process.stdout.write(
            `explore: ip netns exec ${c.ns} ping ${d.ip}   |   weft status --api ${c.api}   |   weft ps --api ${c.api}\n` +
              (result.ui ? `live map: ${result.ui}\n` : '') +
              `clean up: weft demo down\n`,
          );
        }
      }
      if (!result.ok) process.exitCode = 1;
    });

  demo
    .command('down')
    .description('remove every namespace, process and file the demo made')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const r = await demoDown();
      if (o.json) printJson(r);
      else process.stdout.write(`demo down: stopped ${r.stopped} agents, removed ${r.namespaces.length} namespaces\n`);
    });
}

function count(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number ≥ 1, got "${v}"`);
  return n;
}
