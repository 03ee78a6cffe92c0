import type { Command } from 'commander';
import { DEFAULT_API_SOCKET } from '../agent/client.js';
import { runDoctor, type Finding } from '../doctor/index.js';
import { printJson } from './output.js';
import { addEtcdTlsFlags } from './store-flags.js';

/** One line per finding: ✓ ok, ✗ error, ! warning; the fix on the next line. */
export function formatFindings(findings: Finding[]): string {
  const lines: string[] = [];
  for (const f of findings) {
    const mark = f.ok ? '✓' : f.severity === 'error' ? '✗' : '!';
    lines.push(`${mark} ${f.message}`);
    if (!f.ok && f.fix) lines.push(`    fix: ${f.fix}`);
  }
  return lines.join('\n') + '\n';
}

/** `weft doctor`: names why packets don't arrive on this host. Exit 1 when any check finds an error. */
export function registerDoctor(program: Command): void {
  addEtcdTlsFlags(program.command('doctor'))
    .description("check this host's agent, bridge, routes, vxlan entries, forwarding and firewall; name what is wrong")
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--store <url>', 'store URL for lease and VtepMAC checks (default $WEFT_STORE, else the default SQLite file if present)')
    .option('--ping <ip>', 'also ping this container address from this host and explain a failure')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const report = await runDoctor({ api: o.api, storeUrl: o.store, ping: o.ping });
      if (o.json) printJson({ ok: report.ok, findings: report.findings });
      else {
        process.stdout.write(formatFindings(report.findings));
        const errors = report.findings.filter((f) => !f.ok && f.severity === 'error').length;
        const warns = report.findings.filter((f) => !f.ok && f.severity === 'warn').length;
        process.stdout.write(errors || warns ? `${errors} error(s), ${warns} warning(s)\n` : 'all checks passed\n');
      }
      if (!report.ok) process.exitCode = 1;
    });
}
