/**
 * A real dockerd (Debian docker.io 20.10) for tests, started inside a given network namespace.
 *
 * How (see ../shared/notes.md, "Docker inside a network namespace"):
 *   nsenter --net=/run/netns/NS unshare -m --propagation private sh -c
 *     'mkdir -p /run/docker/plugins; mount --bind PLUGIN_DIR /run/docker/plugins; exec dockerd ...'
 * - nsenter --net keeps the machine's cgroup mounts (ip netns exec would remount /sys and lose them);
 * - the private mount namespace gives every daemon its own /run/docker/plugins, so two daemons on one
 *   machine never talk to the same plugin socket; it also keeps dockerd's overlay mounts out of the
 *   machine's mount table (they vanish with the namespace).
 * Each daemon gets its own --data-root, --exec-root, --pidfile, -H unix socket, --cgroup-parent and an
 * empty --config-file. It is stopped by PID (SIGTERM, then SIGKILL), its containerd too, and its
 * directory and cgroups are removed.
 */
import { alive } from '../../src/testbed/agents.js';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, rmdir, stat, symlink, copyFile, writeFile, readdir, chmod } from 'node:fs/promises';
import { existsSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

export const DOCKER_CLIENT = '/usr/bin/docker';
export const DOCKERD = '/usr/sbin/dockerd';
export const BUSYBOX_IMAGE = 'busybox:local';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface StartDockerdOptions {
  /** Network namespace name (under /run/netns) or a path to a netns file. */
  netns: string;
  /** Directory owned by this daemon; created if absent, removed by stop(). Keep it short (unix socket paths). */
  dir?: string;
  /** Directory bound over /run/docker/plugins for this daemon only (default: DIR/plugins). */
  pluginDir?: string;
  /** Extra dockerd arguments (e.g. --bip=..., --mtu=...). */
  extraArgs?: string[];
  /** ms to wait for the API (default 20000). */
  timeoutMs?: number;
}

export interface Dockerd {
  socket: string;
  pid: number;
  dir: string;
  pluginDir: string;
  netns: string;
  /** Runs /usr/bin/docker -H unix://SOCKET ARGS; never throws for a non-zero exit. */
  docker(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<ExecResult>;
  /** Like docker() but throws with stderr on a non-zero exit; returns trimmed stdout. */
  dockerOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** dockerd's log so far. */
  log(): Promise<string>;
  /** Removes every container, stops the daemon and its containerd by PID, removes its dir and cgroups. */
  stop(): Promise<void>;
}

export function run(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? ((err as unknown as { code: number }).code) : 1) : 0;
        resolve({ stdout: String(stdout), stderr: String(stderr) || (err && code !== 0 && !stderr ? err.message : ''), code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

export async function runOk(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout.trim();
}

/** GET /_ping on the daemon's socket. */
function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path: '/_ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}


/** True when /proc/PID is gone or a zombie. */
async function gone(pid: number): Promise<boolean> {
  if (!alive(pid)) return true;
  try {
    const st = await readFile(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await gone(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return gone(pid);
}

async function killPid(pid: number, graceMs: number): Promise<void> {
  if (await gone(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitGone(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitGone(pid, 5000);
}

let counter = 0;

export async function startDockerd(opts: StartDockerdOptions): Promise<Dockerd> {
  const netnsPath = opts.netns.includes('/') ? opts.netns : `/run/netns/${opts.netns}`;
  if (!existsSync(netnsPath)) throw new Error(`startDockerd: no network namespace at ${netnsPath}`);
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'wd-')));
  await mkdir(dir, { recursive: true });
  const pluginDir = opts.pluginDir ?? path.join(dir, 'plugins');
  await mkdir(pluginDir, { recursive: true });
  const dataRoot = path.join(dir, 'data');
  const execRoot = path.join(dir, 'x');
  const socket = path.join(dir, 'docker.sock');
  const pidfile = path.join(dir, 'dockerd.pid');
  const configFile = path.join(dir, 'daemon.json');
  const logFile = path.join(dir, 'dockerd.log');
  if (socket.length > 100 || path.join(execRoot, 'containerd', 'containerd.sock.ttrpc').length > 100) {
    throw new Error(`startDockerd: dir ${dir} is too long for unix socket paths`);
  }
  await mkdir(dataRoot, { recursive: true });
  await mkdir(execRoot, { recursive: true });
  await writeFile(configFile, '{}\n');
  const cgroupParent = `weft-test-${process.pid}-${++counter}-${path.basename(dir)}`;

  const dockerdArgs = [
    DOCKERD,
    `--data-root=${dataRoot}`,
    `--exec-root=${execRoot}`,
    `--pidfile=${pidfile}`,
    `--host=unix://${socket}`,
    `--cgroup-parent=/${cgroupParent}`,
    `--config-file=${configFile}`,
    '--storage-driver=overlay2',
    ...(opts.extraArgs ?? []),
  ];
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = [
    'set -e',
    'mkdir -p /run/docker/plugins',
    `mount --bind ${q(pluginDir)} /run/docker/plugins`,
    `exec ${dockerdArgs.map(q).join(' ')}`,
  ].join('\n');

  const logFh = await open(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('nsenter', [`--net=${netnsPath}`, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], {
      stdio: ['ignore', logFh.fd, logFh.fd],
      detached: false,
    });
  } finally {
    await logFh.close();
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error('startDockerd: spawn failed');
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.on('error', () => resolve());
  });

  const readLog = async () => {
    try {
      return await readFile(logFile, 'utf8');
    } catch {
      return '';
    }
  };

  const docker: Dockerd['docker'] = (args, o = {}) => run(DOCKER_CLIENT, ['-H', `unix://${socket}`, ...args], o);
  const dockerOk: Dockerd['dockerOk'] = async (args, o = {}) => {
    const r = await docker(args, o);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout.trim();
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited && (await ping(socket))) {
      const ids = (await docker(['ps', '-aq'], { timeoutMs: 20_000 })).stdout.split(/\s+/).filter(Boolean);
      if (ids.length) await docker(['rm', '-f', ...ids], { timeoutMs: 30_000 });
    }
    let containerdPid: number | undefined;
    try {
      containerdPid = Number((await readFile(path.join(execRoot, 'containerd', 'containerd.pid'), 'utf8')).trim()) || undefined;
    } catch {
      /* none */
    }
    if (!exited) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const t = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 20_000);
      await exitPromise;
      clearTimeout(t);
    }
    if (containerdPid) await killPid(containerdPid, 5000);
    // cgroups dockerd made for its containers
    for (const ss of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
      await rmdir(path.join('/sys/fs/cgroup', ss, cgroupParent)).catch(() => {});
    }
    // the mount namespace died with the daemon, so overlay mounts are gone; retry rm a few times
    for (let i = 0; i < 10; i++) {
      try {
        await rm(dir, { recursive: true, force: true });
        break;
      } catch (e) {
        if (i === 9) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  // wait for the API
  const end = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!(await ping(socket))) {
    if (exited || Date.now() > end) {
      const logText = await readLog();
      await stop().catch(() => {});
      throw new Error(
        `dockerd in ${opts.netns} ${exited ? `exited (${exited.code ?? exited.signal})` : 'did not answer in time'}; log tail:\n` +
          logText.split('\n').slice(-15).join('\n'),
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return { socket, pid, dir, pluginDir, netns: opts.netns, docker, dockerOk, log: readLog, stop };
}

let rootfsTar: Promise<string> | undefined;

/** A tarball of a busybox-static root filesystem (relative links, see notes.md), built once per process. */
export function busyboxRootfsTar(): Promise<string> {
  rootfsTar ??= (async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'weft-busybox-'));
    const rootfs = path.join(base, 'rootfs');
    for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root']) await mkdir(path.join(rootfs, d), { recursive: true });
    await copyFile('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    await stat('/bin/busybox');
    await chmod(path.join(rootfs, 'bin', 'busybox'), 0o755);
    const list = (await runOk('/bin/busybox', ['--list'])).split('\n').filter((a) => a && a !== 'busybox');
    for (const a of list) await symlink('busybox', path.join(rootfs, 'bin', a)).catch(() => {});
    await symlink('bin', path.join(rootfs, 'sbin'));
    await writeFile(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(path.join(rootfs, 'etc', 'group'), 'root:x:0:\n');
    const tar = path.join(base, 'rootfs.tar');
    await runOk('tar', ['-C', rootfs, '-cf', tar, '.']);
    await rm(rootfs, { recursive: true, force: true });
    process.once('exit', () => {
      try {
        rmSync(base, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
    });
    return tar;
  })();
  return rootfsTar;
}

/** Imports busybox:local into this daemon (no registry needed); a no-op when it is there already. */
export async function ensureBusyboxImage(d: Dockerd): Promise<string> {
  const have = await d.docker(['image', 'inspect', '--format', '{{.Id}}', BUSYBOX_IMAGE]);
  if (have.code === 0) return BUSYBOX_IMAGE;
  const tar = await busyboxRootfsTar();
  await d.dockerOk(['import', '-c', 'CMD ["/bin/sh"]', tar, BUSYBOX_IMAGE], { timeoutMs: 60_000 });
  return BUSYBOX_IMAGE;
}

/** A network namespace made for a test (`ip netns add`), loopback up. */
export async function makeNetns(name: string): Promise<{ name: string; remove(): Promise<void> }> {
  await runOk('ip', ['netns', 'add', name]);
  await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    remove: async () => {
      await run('ip', ['netns', 'del', name]);
    },
  };
}
