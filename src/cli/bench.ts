import { InvalidArgumentError, type Command } from 'commander';
import { DEFAULT_API_SOCKET } from '../agent/client.js';
import { formatBench, runBackendBench } from '../bench/backends.js';
import { DEFAULT_PORT, runPeerBench, serveBench } from '../bench/peer.js';
import { UsageError } from '../util/errors.js';
import { printJson } from './output.js';
import { addEtcdTlsFlags } from './store-flags.js';

const STORE_HELP = 'store both hosts use (default $WEFT_STORE, else the one the local agent uses)';

/**
 * `weft bench`: measured throughput, RTT and CPU per backend next to the underlay. Without --peer on a test
 * bed of namespaces (as `weft demo`); with --peer between this host and one that runs `weft bench serve`.
 */
export function registerBench(program: Command): void {
  const bench = addEtcdTlsFlags(program.command('bench').enablePositionalOptions())
    .description(
      'measure each backend (iperf3 throughput, RTT, CPU per Gbit/s) between two containers, next to the underlay: ' +
        'on two namespace hosts made for it, or with --peer between this host and one running `weft bench serve`',
    )
    .option('--backends <list>', 'comma-separated backends (default: every implemented one; with --peer: every network\'s)', list)
    .option('--peer <host>', 'measure to this host (its host id or underlay IP), which runs `weft bench serve`')
    .option('--network <name>', 'with --peer: measure this network (repeatable; default every network both hosts serve)', collect, [])
    .option('--seconds <n>', 'iperf3 seconds per run (+1 omitted)', positive, 3)
    .option('--reps <n>', 'interleaved runs per path (median)', positive, 1)
    .option('--pings <n>', 'pings per path', positive, 20)
    .option('--wait <seconds>', 'with --peer: how long to wait for the peer\'s `weft bench serve`', positive, 30)
    .option('--api <sock>', 'with --peer: agent API socket', DEFAULT_API_SOCKET)
    .option('--store <url>', `with --peer: ${STORE_HELP}`)
    .option('--json', 'print JSON (progress still goes to stderr)')
    .action(async (o) => {
      const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
      if (!o.peer) {
        const stray = o.network.length ? '--network' : o.store ? '--store' : undefined;
        if (stray) throw new UsageError(`${stray} goes with --peer (without it, weft bench builds its own test hosts)`);
        const rows = await runBackendBench({ backends: o.backends, seconds: o.seconds, reps: o.reps, pings: o.pings, progress });
        if (o.json) printJson({ seconds: o.seconds, reps: o.reps, rows });
        else process.stdout.write(formatBench(rows, { seconds: o.seconds, reps: o.reps }));
        return;
      }
      const r = await runPeerBench({
        api: o.api,
        store: o.store,
        peer: o.peer,
        networks: o.network,
        backends: o.backends,
        seconds: o.seconds,
        reps: o.reps,
        pings: o.pings,
        waitSeconds: o.wait,
        progress,
      });
      if (o.json) printJson({ mode: 'peer', host: r.host, peer: r.peer, seconds: o.seconds, reps: o.reps, rows: r.rows });
      else process.stdout.write(formatBench(r.rows, { seconds: o.seconds, reps: o.reps, peer: { from: r.host.hostId, to: r.peer.hostId } }));
    });

  addEtcdTlsFlags(bench.command('serve'))
    .description(
      'the other end of `weft bench --peer`: attach a bench container to each network, run iperf3 servers in them and on the underlay ' +
        'address, publish them in the store; everything is removed when the client is done, on Ctrl-C, or after --timeout',
    )
    .option('--network <name>', 'serve this network (repeatable; default every network of this host)', collect, [])
    .option('--backends <list>', 'only networks with these backends (comma-separated)', list)
    .option('--port <n>', 'iperf3 port (container and underlay servers)', port, DEFAULT_PORT)
    .option('--timeout <seconds>', 'stop serving after this long', positiveUpTo(86_400), 600)
    .option('--keep', 'keep serving after a client finished (until --timeout or Ctrl-C)')
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--store <url>', STORE_HELP)
    .action(async (o) => {
      const progress = (line: string) => process.stderr.write(`bench serve: ${line}\n`);
      const r = await serveBench({
        api: o.api,
        store: o.store,
        networks: o.network,
        backends: o.backends,
        port: o.port,
        timeoutSeconds: o.timeout,
        keep: !!o.keep,
        progress,
        onReady: (rec) => {
          const lines = [
            `serving a bench on ${rec.hostId} (${rec.publicIp}), iperf3 port ${rec.port}:`,
            `  underlay  ${rec.publicIp}`,
            ...rec.targets.map((t) => `  ${t.network} (${t.backend})  ${t.address}  in ${t.container}`),
            `on the other host run:  weft bench --peer ${rec.hostId}`,
            `(stops when that run is done${o.keep ? ' — not with --keep' : ''}, on Ctrl-C, or in ${o.timeout} s)`,
          ];
          process.stdout.write(lines.join('\n') + '\n');
        },
      });
      const why = r.reason === 'done' ? `run by ${r.runs.join(', ')} done` : r.reason === 'signal' ? 'stopped' : 'timed out';
      process.stdout.write(`${why}; bench containers, iperf3 servers and store keys removed\n`);
    });
}

function list(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, ...list(v)];
}

function positive(v: string): number {
  return positiveUpTo(600)(v);
}

function positiveUpTo(max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`expected a whole number 1–${max}, got "${v}"`);
    return n;
  };
}

function port(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError(`expected a port 1–65535, got "${v}"`);
  return n;
}
