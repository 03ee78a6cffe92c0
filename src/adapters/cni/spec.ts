import { z } from 'zod';
import { isIPv4 } from 'node:net';
import { dnsNameProblem } from '../../dns/records.js';

/**
 * The CNI spec's rules as data (spec 1.1.0; configs of 0.4.0 and 1.0.0 accepted): commands, error codes,
 * what each command needs from the environment, the config fields weft reads, and the result's JSON shape.
 * Pure: parses and formats, touches nothing. The agent's routes (./agent-routes.ts) act on what it returns.
 */

/** Keep in step with SUPPORTED_VERSIONS in ./shim/weft-cni.c (test/unit/cni-spec.test.ts compares them). */
export const SUPPORTED_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;
export const CURRENT_VERSION = '1.1.0';

/** Well-known codes (1–99 are the spec's) and weft's own (100+). */
export const Code = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  Decode: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  NotAvailableDamaged: 51,
  /** The agent could not do it (message says why). */
  AgentFailed: 100,
  /** ADD for a (container id, ifname) that is already attached. */
  AlreadyAttached: 101,
  /** CHECK found the attachment not as ADD left it. */
  CheckFailed: 102,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: string,
  ) {
    super(message);
    this.name = 'CniError';
  }
}

export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'] as const;
export type Command = (typeof COMMANDS)[number];

/** What the plugin executable sends the agent: its CNI_* variables (only those set) and stdin as text. */
export const pluginCallSchema = z.object({
  env: z.record(z.string(), z.string()),
  stdin: z.string().max(1 << 20),
});
export type PluginCall = z.infer<typeof pluginCallSchema>;

export interface CniEnv {
  command: Command;
  containerId?: string;
  netns?: string;
  ifname?: string;
  /** CNI_ARGS as key → value ("IP=10.5.1.9;K8S_POD_NAME=web"). */
  args: Record<string, string>;
  path?: string;
}

/** Which variables each command needs (CNI_PATH is not: weft runs no delegate plugins). */
const REQUIRED: Record<Command, Array<'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME'>> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  GC: [],
  STATUS: [],
  VERSION: [],
};

const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,1023}$/;
/** Linux interface names: 1–15 bytes, no '/', ':' or whitespace, not "." or "..". */
export function validIfname(s: string): boolean {
  return s.length > 0 && Buffer.byteLength(s) <= 15 && s !== '.' && s !== '..' && !/[/:\s]/.test(s);
}

/** Parses the CNI_* variables; code 4 naming the variable at fault. */
export function parseEnv(env: Record<string, string>): CniEnv {
  const command = env.CNI_COMMAND;
  if (command === undefined) throw new CniError(Code.InvalidEnv, 'CNI_COMMAND is not set');
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(Code.InvalidEnv, `CNI_COMMAND=${JSON.stringify(command)} is not one of ${COMMANDS.join(', ')}`);
  }
  const cmd = command as Command;
  for (const name of REQUIRED[cmd]) {
    if (!env[name]) throw new CniError(Code.InvalidEnv, `${name} is required for ${cmd}`);
  }
  const out: CniEnv = { command: cmd, args: parseCniArgs(env.CNI_ARGS ?? '') };
  if (env.CNI_CONTAINERID !== undefined && REQUIRED[cmd].includes('CNI_CONTAINERID')) {
    if (!CONTAINER_ID_RE.test(env.CNI_CONTAINERID)) {
      throw new CniError(Code.InvalidEnv, `CNI_CONTAINERID=${JSON.stringify(env.CNI_CONTAINERID)} is invalid: letters, digits, '_', '.', '-', starting with a letter or digit`);
    }
    out.containerId = env.CNI_CONTAINERID;
  }
  if (env.CNI_IFNAME !== undefined && REQUIRED[cmd].includes('CNI_IFNAME')) {
    if (!validIfname(env.CNI_IFNAME)) throw new CniError(Code.InvalidEnv, `CNI_IFNAME=${JSON.stringify(env.CNI_IFNAME)} is not a valid interface name`);
    out.ifname = env.CNI_IFNAME;
  }
  if (env.CNI_NETNS) {
    if (!env.CNI_NETNS.startsWith('/') || env.CNI_NETNS.length > 4096 || env.CNI_NETNS.includes('\0')) {
      throw new CniError(Code.InvalidEnv, `CNI_NETNS=${JSON.stringify(env.CNI_NETNS)} is not an absolute path`);
    }
    out.netns = env.CNI_NETNS;
  }
  if (env.CNI_PATH) out.path = env.CNI_PATH;
  return out;
}

/** "K=V;K=V" → record; code 4 for a pair without '=' and for an invalid IP=. */
export function parseCniArgs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(Code.InvalidEnv, `CNI_ARGS: ${JSON.stringify(pair)} is not KEY=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (out.IP !== undefined && !isIPv4(stripLen(out.IP))) {
    throw new CniError(Code.InvalidEnv, `CNI_ARGS: IP=${out.IP} is not an IPv4 address`);
  }
  return out;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const ipv4OrCidr = z.string().refine((s) => /^[^/]+(\/\d{1,2})?$/.test(s) && isIPv4(stripLen(s)), 'not an IPv4 address');

const dnsAlias = z.string().superRefine((s, ctx) => {
  const why = dnsNameProblem(s);
  if (why) ctx.addIssue({ code: 'custom', message: `not a DNS name: ${why}` });
});

const dnsSchema = z.object({
  nameservers: z.array(z.string().refine((s) => isIPv4(s) || s.includes(':'), 'not an IP address')).max(16).optional(),
  domain: z.string().max(253).optional(),
  search: z.array(z.string().max(253)).max(32).optional(),
  options: z.array(z.string().max(256)).max(32).optional(),
});
export type Dns = z.infer<typeof dnsSchema>;

const interfaceSchema = z.looseObject({ name: z.string(), mac: z.string().optional(), sandbox: z.string().optional() });
const ipSchema = z.looseObject({ address: z.string(), gateway: z.string().optional(), interface: z.number().int().nonnegative().optional() });
const routeSchema = z.looseObject({ dst: z.string(), gw: z.string().optional() });
/** A result from an earlier plugin (or from our ADD, for CHECK/DEL): kept as is apart from these fields. */
const resultSchema = z.looseObject({
  cniVersion: z.string().optional(),
  interfaces: z.array(interfaceSchema).optional(),
  ips: z.array(ipSchema).optional(),
  routes: z.array(routeSchema).optional(),
  dns: z.looseObject({}).optional(),
});
export type CniResult = z.infer<typeof resultSchema>;

/** The config fields weft reads; others (type, args, capabilities, ipam, chained plugins' own) pass. */
export const configSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string().regex(NAME_RE, "letters, digits, '_', '.', '-', starting with a letter or digit"),
  type: z.string().optional(),
  /** The weft network; default: the network config's `name`. */
  network: z.string().regex(NAME_RE).max(63).optional(),
  agentSocket: z.string().startsWith('/', 'must be an absolute path').optional(),
  mtu: z.number().int().min(68).max(65535).optional(),
  ipMasq: z.boolean().optional(),
  dns: dnsSchema.optional(),
  runtimeConfig: z
    .looseObject({
      ips: z.array(ipv4OrCidr).max(1, 'weft gives one IPv4 address per interface').optional(),
      mac: z.string().regex(MAC_RE, 'not a MAC address').optional(),
      portMappings: z.array(z.looseObject({})).optional(),
      /**
       * DNS aliases by network name (the `aliases` capability, as podman sends `--network-alias`; the
       * dnsname plugin's convention): the ones under this configuration's name are registered.
       */
      aliases: z.record(z.string().max(253), z.array(dnsAlias).max(64)).optional(),
    })
    .optional(),
  prevResult: resultSchema.optional(),
  'cni.dev/valid-attachments': z.array(z.looseObject({ containerID: z.string(), ifname: z.string() })).optional(),
});
export type CniConfig = z.infer<typeof configSchema>;

/**
 * Decodes stdin: code 6 when it is not JSON, 1 for an unsupported cniVersion, 7 for a field that does not
 * fit (the message names it).
 */
export function parseConfig(stdin: string): CniConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(Code.Decode, `cannot decode the network configuration: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CniError(Code.Decode, 'the network configuration is not a JSON object');
  const version = (raw as { cniVersion?: unknown }).cniVersion;
  if (typeof version === 'string' && !supported(version)) {
    throw new CniError(Code.IncompatibleVersion, `cniVersion ${version} is not supported (weft-cni supports ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(config)';
    throw new CniError(Code.InvalidConfig, `invalid network configuration: ${field}: ${issue.message}`);
  }
  return parsed.data;
}

export function supported(version: string): boolean {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(version);
}

/** The cniVersion to answer with: the config's when it is one weft speaks, else the current one. */
export function answerVersion(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && supported(v) ? v : CURRENT_VERSION;
  } catch {
    return CURRENT_VERSION;
  }
}

/**
 * The container's DNS names: CNI_ARGS K8S_POD_NAME (Kubernetes' pod name; podman passes the container
 * name there) when it is a valid DNS name, then runtimeConfig.aliases under this configuration's name.
 */
export function containerDnsNames(env: CniEnv, cfg: CniConfig): { name?: string; aliases: string[] } {
  const pod = env.args.K8S_POD_NAME;
  const name = pod && !dnsNameProblem(pod) ? pod : undefined;
  const aliases = (cfg.runtimeConfig?.aliases?.[cfg.name] ?? []).filter((a) => a.toLowerCase() !== name?.toLowerCase());
  return { ...(name ? { name } : {}), aliases: [...new Set(aliases)] };
}

/** The address the runtime asked for: CNI_ARGS IP= first, then runtimeConfig.ips (the spec's order). */
export function requestedAddress(env: CniEnv, cfg: CniConfig): string | undefined {
  return env.args.IP ?? cfg.runtimeConfig?.ips?.[0];
}

/** What weft made for one attachment, in the terms a result needs. */
export interface Attached {
  hostIf: string;
  hostMac?: string;
  ifname: string;
  mac: string;
  /** With prefix length. */
  address: string;
  /** Absent when the backend gives containers no gateway (then no route either). */
  gateway?: string;
  /** "default" or the CIDR routed via the gateway. */
  routeTo: string;
  mtu: number;
  /** CNI_NETNS as the runtime gave it. */
  sandbox: string;
}

/**
 * The ADD result in the shape of `version`: the host and container interfaces, the address on the
 * container one, its route and the config's DNS. A prevResult (weft chained after another plugin) is kept
 * and extended: its interfaces and ips come first and our indexes follow on.
 */
export function buildResult(version: string, a: Attached, dns?: Dns, prev?: CniResult): CniResult {
  const interfaces = [...(prev?.interfaces ?? [])];
  const base = interfaces.length;
  interfaces.push({ name: a.hostIf, ...(a.hostMac ? { mac: a.hostMac } : {}) });
  interfaces.push({ name: a.ifname, mac: a.mac, sandbox: a.sandbox, ...(version === '1.1.0' ? { mtu: a.mtu } : {}) });
  const ip = { ...(version === '0.4.0' ? { version: '4' } : {}), address: a.address, ...(a.gateway ? { gateway: a.gateway } : {}), interface: base + 1 };
  const routes = a.gateway ? [{ dst: a.routeTo === 'default' ? '0.0.0.0/0' : a.routeTo, gw: a.gateway }] : [];
  const result: CniResult = {
    cniVersion: version,
    interfaces,
    ips: [...(prev?.ips ?? []), ip],
    routes: [...(prev?.routes ?? []), ...routes],
  };
  const d = dns && Object.keys(dns).length ? dns : prev?.dns;
  if (d) result.dns = d;
  return result;
}

/** The error object printed on stdout (the spec's shape). */
export function errorOutput(version: string, err: CniError): Record<string, unknown> {
  return { cniVersion: version, code: err.code, msg: err.message, ...(err.details ? { details: err.details } : {}) };
}

/** What the agent answers the plugin executable: its exit code and stdout (null: print nothing). */
export interface PluginAnswer {
  exit: 0 | 1;
  out: unknown;
}

export function stripLen(a: string): string {
  return a.split('/')[0]!;
}
