/**
 * Starts a throwaway etcd (Debian etcd-server, /usr/bin/etcd) on 127.0.0.1 with free ports and a temp
 * data dir. stop() kills it by PID and removes the dir; a process 'exit' hook does the same if a test
 * run dies without calling stop().
 *
 *   const etcd = await startEtcd();          // etcd.url = 'etcd://127.0.0.1:PORT'
 *   after(() => etcd.stop());
 *
 * With `tls` (files from test/helpers/tls.ts) it serves clients over TLS only and requires a client
 * certificate signed by `tls.ca`: etcd.url = 'etcds://127.0.0.1:PORT', etcd.endpoint = 'https://…'.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { freePort } from './ports.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestEtcd {
  /** Store URL for openStore: `etcd://127.0.0.1:PORT` (append a prefix if wanted). */
  url: string;
  /** Client endpoint: `http://127.0.0.1:PORT`. */
  endpoint: string;
  pid: number;
  dataDir: string;
  /** Kills this etcd (SIGKILL, like a crash) and starts it again on the same ports and data; `whileDown` runs between. */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

export interface EtcdTls {
  /** CA that signs the server and the accepted client certificates. */
  ca: string;
  server: { cert: string; key: string };
  /** A client certificate the health check uses. */
  client: { cert: string; key: string };
}

export interface StartEtcdOptions {
  tls?: EtcdTls;
}

export const ETCD_BIN = process.env.WEFT_TEST_ETCD ?? '/usr/bin/etcd';

/** Why etcd tests cannot run here (no etcd binary), or undefined: `describe(name, { skip: needsEtcd() })`. */
export function needsEtcd(): string | undefined {
  return existsSync(ETCD_BIN) ? undefined : `needs etcd at ${ETCD_BIN} (Debian etcd-server, or set WEFT_TEST_ETCD)`;
}

export { freePort } from './ports.js';

async function healthy(endpoint: string, tls?: EtcdTls): Promise<boolean> {
  if (tls) return healthyTls(endpoint, tls);
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(500) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

function healthyTls(endpoint: string, tls: EtcdTls): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      `${endpoint}/health`,
      { ca: readFileSync(tls.ca), cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key), timeout: 500 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(/"health":\s*"true"/.test(body)));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
  }, 3000);
  await exited(child);
  clearTimeout(timer);
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<TestEtcd> {
  const tls = opts.tls;
  const scheme = tls ? 'https' : 'http';
  const dataDir = mkdtempSync(join(tmpdir(), 'weft-etcd-'));
  let clientPort = 0;
  let peerPort = 0;
  let child: ChildProcess | undefined;
  let stderr = '';

  const launch = async (): Promise<ChildProcess> => {
    const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const tlsArgs = tls
      ? ['--cert-file', tls.server.cert, '--key-file', tls.server.key, '--client-cert-auth', '--trusted-ca-file', tls.ca]
      : [];
    stderr = '';
    const c = spawn(
      ETCD_BIN,
      [
        '--name', 'default',
        '--data-dir', join(dataDir, 'data'),
        '--listen-client-urls', endpoint,
        '--advertise-client-urls', endpoint,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `default=${peer}`,
        '--logger', 'zap',
        '--log-level', 'error',
        ...tlsArgs,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    c.stderr!.setEncoding('utf8');
    c.stderr!.on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (c.exitCode !== null || c.signalCode !== null) break;
      if (await healthy(endpoint, tls)) return c;
      await new Promise((r) => setTimeout(r, 50));
    }
    await killChild(c);
    throw new Error(`etcd on ${endpoint} did not become healthy (exit ${c.exitCode}); stderr:\n${stderr}`);
  };

  const onExit = () => {
    // Last resort when the test process ends without stop(): synchronous kill by PID and cleanup.
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  // Ports are free when picked but another process may grab one before etcd binds: retry a few times.
  for (let attempt = 0; ; attempt++) {
    clientPort = await freePort();
    peerPort = await freePort();
    if (peerPort === clientPort) continue;
    try {
      child = await launch();
      break;
    } catch (err) {
      rmSync(join(dataDir, 'data'), { recursive: true, force: true });
      if (attempt >= 2) {
        process.off('exit', onExit);
        rmSync(dataDir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
  const etcd: TestEtcd = {
    url: `${tls ? 'etcds' : 'etcd'}://127.0.0.1:${clientPort}`,
    endpoint,
    pid: child.pid!,
    dataDir,
    async restart(whileDown) {
      if (child) {
        if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
          process.kill(child.pid, 'SIGKILL');
        }
        await exited(child);
      }
      await whileDown?.();
      child = await launch();
      etcd.pid = child.pid!;
    },
    async stop() {
      if (child) await killChild(child);
      child = undefined;
      process.off('exit', onExit);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return etcd;
}
