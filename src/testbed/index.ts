import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { run, type RunResult } from '../system/exec.js';
import { ipBatch, ipJson } from '../system/ip.js';
import { inNetns } from '../system/netns.js';
import { pidAlive } from '../system/process.js';
import { WeftError } from '../util/errors.js';

/**
 * A test bed of network namespaces: one "switch" namespace holding bridge br0 (the underlay L2 segment)
 * and n "host" namespaces, each with eth0 on the switch, an underlay address and a default route.
 * Every namespace name starts with `${prefix}-`, so cleanupPrefix(prefix) finds all of them.
 */
export interface TestbedHost {
  /** Short name within the test bed: h1, h2, … */
  id: string;
  /** Namespace name: `${prefix}-h1`. */
  ns: string;
  /** Underlay address (no prefix length) on eth0. */
  ip: string;
  iface: 'eth0';
  /** Container namespaces made on this host. */
  containers: string[];
}

export interface TestbedOptions {
  /** Namespace name prefix; default `wt` + 4 random chars. Keep it ≤ 8 chars. */
  prefix?: string;
  hosts?: number;
  /** Underlay /24; default a 192.168.X.0/24 derived from the prefix (clear of 10.x / 172.x container networks). */
  underlayCidr?: string;
  /** Underlay MTU (default 1500). */
  mtu?: number;
}

export function randomPrefix(): string {
  const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return 'wt' + [...randomBytes(4)].map((b) => abc[b % abc.length]).join('');
}

function underlayFor(prefix: string): string {
  const h = createHash('sha256').update(prefix).digest();
  return `192.168.${100 + (h[0]! % 150)}.0/24`;
}

/** A command as argv, or a string run by `sh -c`. */
export type Command = readonly string[] | string;

function argv(cmd: Command): string[] {
  return typeof cmd === 'string' ? ['sh', '-c', cmd] : [...cmd];
}

/** Runs a command inside a namespace by name (nsenter, no mount namespace games). */
export function nsExec(ns: string, cmd: Command, opts: { allowFail?: boolean; input?: string } = {}): Promise<RunResult> {
  const a0 = argv(cmd);
  const [c, a] = inNetns(ns, a0[0]!, a0.slice(1));
  return run(c, a, opts);
}

async function listNetns(): Promise<string[]> {
  const r = await ipJson<Array<{ name: string }>>(['netns', 'list']);
  return r.map((n) => n.name);
}

/**
 * Stops, by PID, every process still living in these namespaces (`ip netns pids`), except this one:
 * SIGTERM, then SIGKILL for what is left after a second (daemons an agent left running detached, too).
 */
async function stopNetnsProcesses(names: readonly string[]): Promise<void> {
  const pids: number[] = [];
  for (const ns of names) {
    const r = await run('ip', ['netns', 'pids', ns], { allowFail: true });
    for (const pid of r.stdout.split(/\s+/).filter(Boolean).map(Number)) if (pid > 1 && pid !== process.pid) pids.push(pid);
  }
  const signal = (pid: number, s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      /* already gone */
    }
  };
  for (const pid of pids) signal(pid, 'SIGTERM');
  for (let i = 0; i < 20 && pids.some(pidAlive); i++) await new Promise((r) => setTimeout(r, 50));
  for (const pid of pids) if (pidAlive(pid)) signal(pid, 'SIGKILL');
}

function belongs(name: string, prefix: string): boolean {
  return name === prefix || name.startsWith(prefix + '-');
}

/**
 * Removes every namespace whose name is `prefix` or starts with `prefix-` (`weft demo down`), after
 * stopping (by PID) the processes still running inside them: SIGTERM first, so daemons such as wireguard-go
 * remove their machine-wide sockets (/var/run/wireguard), SIGKILL after a second. Carries on past failures.
 * Returns the names removed.
 */
export async function cleanupPrefix(prefix: string): Promise<string[]> {
  if (!prefix) throw new WeftError('cleanupPrefix needs a non-empty prefix');
  const names = (await listNetns()).filter((n) => belongs(n, prefix));
  await stopNetnsProcesses(names);
  // containers first, switch last, so no veth dangles meanwhile
  const ordered = [...names].sort((a, b) => b.length - a.length);
  await ipBatch(ordered.map((n) => `netns del ${n}`), { force: true }).catch(() => {});
  const left = (await listNetns()).filter((n) => belongs(n, prefix));
  for (const n of left) await run('ip', ['netns', 'del', n], { allowFail: true });
  // per-namespace files (`ip netns exec` bind-mounts them): the agents write resolv.conf there
  for (const n of existsSync('/etc/netns') ? readdirSync('/etc/netns') : []) {
    if (belongs(n, prefix)) rmSync(`/etc/netns/${n}`, { recursive: true, force: true });
  }
  return names;
}

export class Testbed {
  readonly hosts: TestbedHost[] = [];
  readonly switchNs: string;
  readonly underlayCidr: string;
  readonly mtu: number;
  private nextHost = 1;
  private readonly children = new Map<number, { ns: string; child: ChildProcess }>();
  private destroyed = false;

  constructor(readonly prefix: string, o: TestbedOptions = {}) {
    this.switchNs = `${prefix}-sw`;
    this.underlayCidr = o.underlayCidr ?? underlayFor(prefix);
    this.mtu = o.mtu ?? 1500;
  }

  private get base(): string {
    return this.underlayCidr.split('/')[0]!.split('.').slice(0, 3).join('.');
  }

  /** The switch's own address on br0 (the hosts' default gateway). */
  get gateway(): string {
    return `${this.base}.1`;
  }

  async init(): Promise<void> {
    await run('ip', ['netns', 'add', this.switchNs]);
    await ipBatch(
      ['link set lo up', `link add br0 mtu ${this.mtu} type bridge`, `addr add ${this.gateway}/24 dev br0`, 'link set br0 up'],
      { netns: this.switchNs },
    );
  }

  /** A host by id (h1), namespace name or object. */
  host(id: string | TestbedHost): TestbedHost {
    const key = typeof id === 'string' ? id : id.ns;
    const h = this.hosts.find((x) => x.id === key || x.ns === key);
    if (!h) throw new WeftError(`test bed ${this.prefix} has no host ${key}`);
    return h;
  }

  /** Adds a host namespace wired to the switch. Host numbers are never reused. */
  async addHost(): Promise<TestbedHost> {
    const n = this.nextHost++;
    if (n > 240) throw new WeftError('test bed is full (240 hosts)');
    const id = `h${n}`;
    const h: TestbedHost = { id, ns: `${this.prefix}-${id}`, ip: `${this.base}.${10 + n}`, iface: 'eth0', containers: [] };
    await run('ip', ['netns', 'add', h.ns]);
    this.hosts.push(h);
    await ipBatch(
      [`link add ${id} mtu ${this.mtu} type veth peer name eth0 mtu ${this.mtu} netns ${h.ns}`, `link set ${id} master br0 up`],
      { netns: this.switchNs },
    );
    await ipBatch(['link set lo up', `addr add ${h.ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${this.gateway}`], {
      netns: h.ns,
    });
    return h;
  }

  /**
   * Kills the host's tracked processes, then (by PID) any other process still in its namespaces (e.g. a
   * daemon an agent left running detached), and deletes its namespace and its containers' namespaces.
   */
  async removeHost(id: string | TestbedHost): Promise<void> {
    const h = this.host(id);
    const nss = [...h.containers, h.ns];
    await this.killChildren((ns) => nss.includes(ns));
    await stopNetnsProcesses(nss);
    await ipBatch(nss.map((n) => `netns del ${n}`), { force: true }).catch(() => {});
    this.hosts.splice(this.hosts.indexOf(h), 1);
  }

  /** Creates a container namespace `${prefix}-${host}-${name}` (lo up, no interfaces yet); returns its name. */
  async addContainer(hostId: string | TestbedHost, name: string): Promise<string> {
    const h = this.host(hostId);
    const ns = `${this.prefix}-${h.id}-${name}`;
    await run('ip', ['netns', 'add', ns]);
    h.containers.push(ns);
    await ipBatch(['link set lo up'], { netns: ns });
    return ns;
  }

  /** Runs a command in a namespace of the test bed; throws on failure unless allowFail. */
  exec(ns: string, cmd: Command, opts: { allowFail?: boolean; input?: string } = {}): Promise<RunResult> {
    return nsExec(ns, cmd, opts);
  }

  /** One ping; true when it was answered. */
  async ping(ns: string, ip: string, o: { count?: number; timeoutSec?: number } = {}): Promise<boolean> {
    const r = await nsExec(ns, ['ping', '-n', '-q', '-c', String(o.count ?? 1), '-W', String(o.timeoutSec ?? 1), ip], { allowFail: true });
    return r.code === 0;
  }

  /** Starts a long-running process in a namespace, tracked by PID until it exits or destroy(). */
  spawn(ns: string, cmd: Command, opts: SpawnOptions = {}): ChildProcess {
    const a0 = argv(cmd);
    const [c, a] = inNetns(ns, a0[0]!, a0.slice(1));
    const child = spawnChild(c, a, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    if (child.pid !== undefined) {
      const pid = child.pid;
      this.children.set(pid, { ns, child });
      child.on('exit', () => this.children.delete(pid));
    }
    child.on('error', () => {});
    return child;
  }

  private async killChildren(which: (ns: string) => boolean): Promise<void> {
    const victims = [...this.children.entries()].filter(([, c]) => which(c.ns));
    const exited = victims.map(
      ([pid, c]) =>
        new Promise<void>((resolve) => {
          if (c.child.exitCode !== null || c.child.signalCode !== null) return resolve();
          c.child.once('exit', () => resolve());
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            resolve();
          }
          setTimeout(() => {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              /* gone */
            }
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(exited);
    for (const [pid] of victims) this.children.delete(pid);
  }

  /** Kills tracked children by PID, then deletes every namespace with the prefix. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.killChildren(() => true).catch(() => {});
    try {
      await cleanupPrefix(this.prefix);
    } catch {
      // one more time after a moment (e.g. ip busy); leftovers are reported by the caller's checks
      await new Promise((r) => setTimeout(r, 200));
      await cleanupPrefix(this.prefix);
    }
    this.hosts.length = 0;
  }
}

/** Builds a test bed; on a failure while building it removes what it made and rethrows. */
export async function createTestbed(o: TestbedOptions = {}): Promise<Testbed> {
  let prefix = o.prefix;
  if (!prefix) {
    const taken = await listNetns();
    do prefix = randomPrefix();
    while (taken.some((n) => belongs(n, prefix!)));
  }
  if (!/^[a-z0-9]{1,10}$/.test(prefix)) throw new WeftError(`test bed prefix "${prefix}" must be 1–10 lowercase letters/digits`);
  const tb = new Testbed(prefix, o);
  try {
    await tb.init();
    for (let i = 0; i < (o.hosts ?? 0); i++) await tb.addHost();
  } catch (e) {
    await tb.destroy().catch(() => {});
    throw e;
  }
  return tb;
}
