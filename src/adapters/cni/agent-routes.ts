import type { Route } from '../../agent/api.js';
import type { Agent } from '../../agent/agent.js';
import type { NetworkRunner } from '../../agent/network-runner.js';
import type { Endpoint } from '../../agent/types.js';
import { endpointId } from '../../agent/endpoints.js';
import { networkKeys } from '../../store/layout.js';
import { KernelBatch } from '../../system/ops.js';
import { listNetnsInterfaces } from '../../system/veth.js';
import { WeftError } from '../../util/errors.js';
import { log as rootLog } from '../../util/log.js';
import { Attachments, type CniAttachment } from './attachments.js';
import {
  answerVersion,
  buildResult,
  CniError,
  containerDnsNames,
  Code,
  CURRENT_VERSION,
  errorOutput,
  parseConfig,
  parseEnv,
  pluginCallSchema,
  requestedAddress,
  stripLen,
  SUPPORTED_VERSIONS,
  type CniConfig,
  type CniEnv,
  type PluginAnswer,
} from './spec.js';

/**
 * The agent's side of the CNI plugin: `POST /cni` takes what the weft-cni executable sends ({env, stdin})
 * and answers {exit, out} — the exit code and the exact stdout the executable prints. Every rule of the
 * spec lives here and in ./spec.ts; attaching is the agent's own endpoints.attach/detach.
 */
export function cniRoutes(agent: Agent): Route[] {
  const cni = new CniService(agent);
  return [{ method: 'POST', path: '/cni', body: pluginCallSchema, handler: (body) => cni.handle(body) }];
}

const log = rootLog.child({ component: 'cni' });

export class CniService {
  private readonly attachments: Attachments;
  /** One call at a time per (container id, ifname); different attachments run side by side. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly agent: Agent) {
    this.attachments = new Attachments(agent.store, agent.hostId);
  }

  async handle(body: unknown): Promise<PluginAnswer> {
    const call = pluginCallSchema.safeParse(body);
    if (!call.success) throw new WeftError(`POST /cni takes {env, stdin} as the weft-cni executable sends: ${call.error.issues[0]?.message}`);
    const { env: rawEnv, stdin } = call.data;
    const version = answerVersion(stdin);
    try {
      const env = parseEnv(rawEnv);
      if (env.command === 'VERSION') return { exit: 0, out: { cniVersion: CURRENT_VERSION, supportedVersions: SUPPORTED_VERSIONS } };
      const cfg = parseConfig(stdin);
      const out = await this.dispatch(env, cfg);
      return { exit: 0, out: out ?? null };
    } catch (err) {
      const e = toCniError(err);
      if (e.code === Code.AgentFailed) log.warn({ err, env: rawEnv.CNI_COMMAND, containerId: rawEnv.CNI_CONTAINERID }, 'CNI call failed');
      return { exit: 1, out: errorOutput(version, e) };
    }
  }

  private dispatch(env: CniEnv, cfg: CniConfig): Promise<unknown> {
    switch (env.command) {
      case 'ADD':
        // also one ADD per namespace: two ids must not both take the endpoint attach() hands back for it
        return this.serial(attachmentKey(env), () => this.serial(`netns\0${env.netns}`, () => this.add(env, cfg)));
      case 'DEL':
        return this.serial(attachmentKey(env), () => this.del(env.containerId!, env.ifname!));
      case 'CHECK':
        return this.serial(attachmentKey(env), () => this.check(env, cfg));
      case 'GC':
        return this.gc(cfg);
      case 'STATUS':
        return this.status(cfg);
      default:
        throw new CniError(Code.InvalidEnv, `CNI_COMMAND=${env.command} is not handled by the agent`);
    }
  }

  private async add(env: CniEnv, cfg: CniConfig): Promise<unknown> {
    const containerId = env.containerId!;
    const ifname = env.ifname!;
    const netnsPath = env.netns!;
    const runner = this.runner(cfg);
    if (cfg.mtu !== undefined && cfg.mtu > runner.backend.mtu) {
      throw new CniError(Code.InvalidConfig, `mtu ${cfg.mtu} is larger than network ${runner.name}'s ${runner.backend.mtu} (its backend's encapsulation needs the difference)`);
    }
    if (cfg.ipMasq && !(this.agent.opts.ipMasq ?? runner.config.IPMasq)) {
      throw new CniError(Code.UnsupportedField, `ipMasq: true: network ${runner.name} does not masquerade on this host (set IPMasq in the network or run the agent with --ip-masq)`);
    }
    // Recorded before the interface exists: a DEL after a crash half-way finds what to undo.
    const record: CniAttachment = { containerId, ifname, config: cfg.name, network: runner.name, netns: netnsPath, state: 'adding' };
    if (!(await this.attachments.create(record))) {
      const had = await this.attachments.get(containerId, ifname);
      throw new CniError(Code.AlreadyAttached, `container ${containerId} already has ${ifname}${had ? ` on network ${had.network}` : ''}; DEL it first`);
    }
    let ep: Endpoint | undefined;
    try {
      // attach() answers an existing endpoint as it is: refuse one made by another caller (ADD must not share it)
      const target = await this.agent.endpoints.resolve(netnsPath);
      const epKey = networkKeys(this.agent.store, runner.name).endpoint(this.agent.hostId, endpointId(target.key, runner.name));
      const taken = await this.agent.store.get(epKey);
      if (taken) {
        const other = JSON.parse(taken.value) as Endpoint;
        throw new CniError(Code.AlreadyAttached, `${netnsPath} is already on network ${runner.name} as ${other.ifname}: weft gives a namespace one interface per network`);
      }
      const { name, aliases } = containerDnsNames(env, cfg);
      ep = await this.agent.endpoints.attach({
        container: netnsPath,
        network: runner.name,
        address: requestedAddress(env, cfg),
        ifname,
        // the runtime owns the container: a chained plugin (tuning) or runtimeConfig.mac may change its MAC
        pinMac: false,
        ...(name ? { name } : {}),
        ...(aliases.length ? { aliases } : {}),
      });
      const mac = cfg.runtimeConfig?.mac?.toLowerCase() ?? ep.mac;
      const mtu = cfg.mtu ?? runner.backend.mtu;
      const tweaks = new KernelBatch();
      if (mtu !== runner.backend.mtu) tweaks.linkSet(ifname, { mtu });
      if (mac !== ep.mac) tweaks.linkSet(ifname, { address: mac });
      if (tweaks.size) await tweaks.commit({ netns: target.netns });
      // both ends of the veth: a port larger than the container's end sends it packets its end drops
      if (mtu !== runner.backend.mtu) await new KernelBatch().linkSet(ep.hostIf, { mtu }).commit();
      const result = buildResult(
        cfg.cniVersion,
        { hostIf: ep.hostIf, ifname, mac, address: ep.address, gateway: ep.gateway, routeTo: ifname === 'eth0' ? 'default' : runner.config.Network /* as Endpoints.attach routes it */, mtu, sandbox: netnsPath },
        cfg.dns,
        cfg.prevResult,
      );
      const written = await this.agent.store.get(epKey);
      if (!written) throw new CniError(Code.AgentFailed, `the endpoint of ${netnsPath} vanished while it was being attached`);
      await this.attachments.put({ ...record, state: 'ready', endpoint: { key: epKey, revision: written.revision }, result });
      return result;
    } catch (err) {
      // Undo what this ADD made (never an endpoint that was there before it).
      if (ep) await this.agent.endpoints.detach({ container: netnsPath, network: runner.name }).catch((e) => log.warn({ err: e }, 'undoing a failed ADD'));
      await this.attachments.delete(containerId, ifname);
      throw err;
    }
  }

  /** Frees what ADD made; success also when there is nothing (unknown id, namespace gone, second DEL). */
  private async del(containerId: string, ifname: string): Promise<void> {
    const rec = await this.attachments.get(containerId, ifname);
    if (!rec) return;
    const running = this.agent.runners.has(rec.network);
    if (!running && this.agent.failed.has(rec.network)) {
      throw new CniError(Code.TryAgainLater, `network ${rec.network} is not running on this host: ${this.agent.failed.get(rec.network)}`);
    }
    // A network that is gone took its addresses with it: only the record is left to drop.
    // The namespace path may name another container by now (detached by hand, path reused): leave that one be.
    const ours = async () => {
      if (!rec.endpoint) return true; // ADD did not finish: whatever it made on that path is its
      return (await this.agent.store.get(rec.endpoint.key))?.revision === rec.endpoint.revision;
    };
    if (running && (await ours())) {
      try {
        // the record ADD wrote is found by its key; an ADD that did not finish is looked for by its namespace
        if (rec.endpoint) await this.agent.endpoints.detachKey(rec.endpoint.key);
        else await this.agent.endpoints.detach({ container: rec.netns, network: rec.network });
      } catch (err) {
        if (!(err instanceof WeftError && /is not attached/.test(err.message))) throw err;
      }
    }
    await this.attachments.delete(containerId, ifname);
  }

  private async check(env: CniEnv, cfg: CniConfig): Promise<void> {
    if (!cfg.prevResult) throw new CniError(Code.InvalidConfig, 'CHECK needs prevResult (the result of ADD)');
    const rec = await this.attachments.get(env.containerId!, env.ifname!);
    if (!rec || rec.state !== 'ready') throw new CniError(Code.UnknownContainer, `container ${env.containerId} has no ${env.ifname} from weft`);
    const runner = this.runner(cfg);
    const ep = (await this.agent.endpoints.list([runner.name])).find((e) => e.container === rec.netns);
    if (!ep) throw new CniError(Code.CheckFailed, `weft has no endpoint for ${rec.netns} on network ${runner.name}`);
    if (!cfg.prevResult.ips?.some((ip) => stripLen(ip.address) === stripLen(ep.address))) {
      throw new CniError(Code.CheckFailed, `prevResult does not hold ${ep.address}, the address weft gave ${env.ifname}`);
    }
    let names: string[];
    try {
      names = await listNetnsInterfaces((await this.agent.endpoints.resolve(env.netns!)).netns);
    } catch (err) {
      throw new CniError(Code.CheckFailed, `cannot look into ${env.netns}: ${(err as Error).message}`);
    }
    if (!names.includes(env.ifname!)) throw new CniError(Code.CheckFailed, `${env.ifname} is gone from ${env.netns}`);
  }

  /** Frees every attachment of this configuration that the runtime no longer lists as valid. */
  private async gc(cfg: CniConfig): Promise<void> {
    const valid = cfg['cni.dev/valid-attachments'];
    if (!valid) throw new CniError(Code.InvalidConfig, 'GC needs cni.dev/valid-attachments');
    const keep = new Set(valid.map((v) => `${v.containerID}\0${v.ifname}`));
    const stale = (await this.attachments.list()).filter((a) => a.config === cfg.name && !keep.has(`${a.containerId}\0${a.ifname}`));
    for (const a of stale) await this.serial(attachmentKey(a), () => this.del(a.containerId, a.ifname));
  }

  /** Ready for ADD when the network runs here: 50 otherwise, 51 when containers are already on it. */
  private async status(cfg: CniConfig): Promise<void> {
    const name = cfg.network ?? cfg.name;
    if (this.agent.runners.has(name)) return;
    const why = this.agent.failed.get(name) ?? `this host does not run network ${name}`;
    const users = (await this.attachments.list()).some((a) => a.network === name);
    throw new CniError(users ? Code.NotAvailableDamaged : Code.NotAvailable, why);
  }

  private runner(cfg: CniConfig): NetworkRunner {
    const name = cfg.network ?? cfg.name;
    const r = this.agent.runners.get(name);
    if (r) return r;
    const why = this.agent.failed.get(name);
    if (why) throw new CniError(Code.TryAgainLater, `network ${name} is not running on this host yet: ${why}`);
    throw new CniError(Code.InvalidConfig, `unknown weft network "${name}" (set "network" in the config; this host runs: ${[...this.agent.runners.keys()].join(', ') || 'none'})`);
  }

  private async serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(key) ?? Promise.resolve();
    const mine = before.catch(() => {}).then(fn);
    this.locks.set(key, mine);
    try {
      return await mine;
    } finally {
      if (this.locks.get(key) === mine) this.locks.delete(key);
    }
  }
}

function attachmentKey(a: { containerId?: string; ifname?: string }): string {
  return `${a.containerId}\0${a.ifname}`;
}

/** Anything thrown on the way becomes a spec error; the agent's own messages keep their words. */
function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof WeftError && err.code === 'ENOCONTAINER') return new CniError(Code.InvalidEnv, `CNI_NETNS: ${err.message}`);
  const msg = err instanceof Error ? err.message : String(err);
  return new CniError(Code.AgentFailed, msg);
}
