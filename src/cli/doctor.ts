import type { Command } from 'commander';
import { DEFAULT_API_SOCKET } from '../agent/client.js';
import { askCluster, type ClusterReport } from '../doctor/cluster.js';
import { pickStoreUrl, runDoctor, type Finding } from '../doctor/index.js';
import { openStore } from '../store/index.js';
import { WeftError } from '../util/errors.js';
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

/** One section per host: its verdict line, then its failing findings (all of them with `verbose`). */
export function formatCluster(r: ClusterReport, verbose = false): string {
  const out: string[] = [];
  for (const h of r.hosts) {
    const errors = h.findings.filter((f) => !f.ok && f.severity === 'error').length;
    const warns = h.findings.filter((f) => !f.ok && f.severity === 'warn').length;
    const head = h.error ? `✗ ${h.error}` : errors || warns ? `${errors} error(s), ${warns} warning(s)` : `all ${h.findings.length} checks passed`;
    out.push(`== ${h.hostId}${h.publicIp ? ` (${h.publicIp})` : ''}: ${head}`);
    const shown = verbose ? h.findings : h.findings.filter((f) => !f.ok);
    if (shown.length) out.push(formatFindings(shown).trimEnd().replace(/^/gm, '  '));
  }
  const bad = r.hosts.filter((h) => !h.ok).length;
  out.push(bad ? `${bad} of ${r.hosts.length} host(s) have errors` : `all ${r.hosts.length} hosts passed`);
  return out.join('\n') + '\n';
}

/** `weft doctor`: names why packets don't arrive on this host. Exit 1 when any check finds an error. */
export function registerDoctor(program: Command): void {
  addEtcdTlsFlags(program.command('doctor'))
    .description("check this host's agent, bridge, routes, vxlan entries, forwarding and firewall; name what is wrong")
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--store <url>', 'store URL for lease and VtepMAC checks (default $WEFT_STORE, else the default SQLite file if present)')
    .option('--ping <ip>', 'also ping this container address from this host and explain a failure')
    .option('--no-probe', 'skip the per-peer path probes (underlay ping, DF path-MTU ping)')
    .option('--all', 'ask every agent in the store (through the store) and print one cluster-wide report')
    .option('--verbose', 'with --all: print every finding, not only the failing ones')
    .option('--wait <seconds>', 'with --all: how long to wait for the agents', (v: string) => Number(v), 15)
    .option('--json', 'print JSON')
    .action(async (o) => {
      if (o.all) {
        const url = pickStoreUrl(o.store);
        if (!url) throw new WeftError('--all needs the store: pass --store URL (or set $WEFT_STORE)');
        const store = await openStore(url);
        let r: ClusterReport;
        try {
          r = await askCluster(store, { timeoutMs: Math.max(1, o.wait) * 1000 });
        } finally {
          await store.close();
        }
        if (o.json) printJson(r);
        else process.stdout.write(formatCluster(r, o.verbose));
        if (!r.ok) process.exitCode = 1;
        return;
      }
      const report = await runDoctor({ api: o.api, storeUrl: o.store, ping: o.ping, noProbe: o.probe === false });
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
