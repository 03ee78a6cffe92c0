import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { UsageError, WeftError } from '../util/errors.js';

type Register = (program: Command) => void;

/**
 * Command groups by the commands they define. Only the group of the command being run is loaded: the
 * daemon's modules (zod, the store, backends) cost ~0.3 s of start-up that `weft attach` need not pay.
 */
const groups: Array<[string[], () => Promise<Register>]> = [
  [['network'], async () => (await import('./network.js')).registerNetwork],
  [['docker-opts'], async () => (await import('./docker.js')).registerDocker],
  [['agent', 'reset'], async () => (await import('./agent.js')).registerAgent],
  [['attach', 'detach', 'ps', 'status'], async () => (await import('./endpoints.js')).registerEndpoints],
  [['demo'], async () => (await import('./demo.js')).registerDemo],
  [['doctor'], async () => (await import('./doctor.js')).registerDoctor],
  [['dns-add', 'dns-remove', 'dns-lookup', 'dns-args'], async () => (await import('./dns.js')).registerDns],
  [['install-cni'], async () => (await import('./cni.js')).registerCni],
  [['rotate-keys'], async () => (await import('./wireguard.js')).registerWireguard],
  [['ui'], async () => (await import('./ui.js')).registerUi],
  [['bench'], async () => (await import('./bench.js')).registerBench],
  [['bgp'], async () => (await import('./bgp.js')).registerBgp],
];

export interface CliOutcome {
  /** The exit status the command asks for (commander's own, or 1 after an error; 0 otherwise). */
  code: number;
  /** An error ended the command: the process should exit now rather than wait for pending I/O. */
  failed: boolean;
}

/**
 * weft's command line: parse, call, print. Each command group lives in its own module (listed in `groups`);
 * every error ends as one line on stderr and a non-zero status. A new program per call, so tests can run
 * commands in-process (main.ts is the executable's entry).
 */
export async function runCli(argv: readonly string[]): Promise<CliOutcome> {
  const program = new Command('weft')
    .description('one network for containers on many hosts')
    .version(weftVersion(), '-V, --version', 'print weft\'s version')
    .showHelpAfterError(false)
    // options after a command name are that command's: `weft bench serve --api X` is serve's --api, not bench's
    .enablePositionalOptions()
    .exitOverride();

  const named = groups.find(([commands]) => commands.includes(argv[2] ?? ''));
  const versionOnly = argv[2] === '-V' || argv[2] === '--version';
  for (const [, load] of named ? [named] : versionOnly ? [] : groups) (await load())(program);

  try {
    await program.parseAsync([...argv]);
    return { code: 0, failed: false };
  } catch (err) {
    // commander already printed its message (or the help / version text)
    if (err instanceof CommanderError) return { code: err.exitCode, failed: false };
    const msg = err instanceof WeftError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`weft: ${msg.split('\n')[0]}\n`);
    if (process.env.WEFT_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return { code: err instanceof UsageError ? err.exitCode : 1, failed: true };
  }
}

/** The version in weft's package.json (the file is found from this module, also inside the bundle). */
function weftVersion(): string {
  try {
    return String((JSON.parse(readFileSync(path.join(packageRoot(import.meta.url), 'package.json'), 'utf8')) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}
