import { blockSize, containsAddress, intToIp, ipToInt, isIPv4, lastAddress, networkOf, parseCidrLoose } from '../net/ipv4.js';
import { z } from 'zod';
import { backendSpec, backendTypes } from './backend-spec.js';
import { WeftError } from '../util/errors.js';
import type { BackendConfig, NetworkConfig } from './types.js';

/**
 * Validation and defaults of a network config (flannel's JSON). Every rejection names the field and the
 * bad value: `invalid network config: SubnetLen 16: must be longer than the network's prefix /16`.
 */

export const DEFAULT_SUBNET_LEN = 24;

/** flannel's default: a /24 per host, or a quarter of the network when it is smaller than a /22. */
export function defaultSubnetLen(networkPrefix: number): number {
  return networkPrefix > 22 ? networkPrefix + 2 : DEFAULT_SUBNET_LEN;
}
export const DEFAULT_BACKEND = 'vxlan';
/** Longest subnet a host may lease: a /30 still has two usable addresses (bridge + one container). */
export const MAX_SUBNET_LEN = 30;
/**
 * Seconds between an agent's full reconciles against the kernel (routes, rules, endpoints), which repair drift
 * such as a route deleted by hand (`weft agent --resync`). Each one reads the kernel with a few processes, the
 * main cost of an idle agent (issue 15: at 30 s, with the health probe's pings, 0.2 % CPU per agent).
 */
export const DEFAULT_RESYNC_SECONDS = 60;
const backendSchema = z.looseObject({ Type: z.string() });

const schema = z
  .looseObject({
    Network: z.string(),
    SubnetLen: z.number().int().optional(),
    SubnetMin: z.string().optional(),
    SubnetMax: z.string().optional(),
    Backend: backendSchema.optional(),
    IPMasq: z.boolean().optional(),
  })
  .superRefine((cfg, ctx) => {
    const fail = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    const net = parseCidrLoose(cfg.Network);
    if (!net) return fail('Network', 'not an IPv4 CIDR like 10.5.0.0/16');
    const base = networkOf(net.ip, net.len);
    if (base !== net.ip) return fail('Network', `host bits are set (did you mean ${intToIp(base)}/${net.len}?)`);
    const subnetLen = cfg.SubnetLen ?? defaultSubnetLen(net.len);
    if (subnetLen <= net.len) return fail('SubnetLen', `must be longer than the network's prefix /${net.len}`);
    // flanneld refuses these too (its message, word for word after "network")
    if (subnetLen < net.len + 2) return fail('SubnetLen', 'network must be able to accommodate at least four subnets');
    if (subnetLen > MAX_SUBNET_LEN) {
      if (cfg.SubnetLen === undefined) return fail('Network', `too small: weft needs at least a /${MAX_SUBNET_LEN - 2}`);
      return fail('SubnetLen', `must be at most ${MAX_SUBNET_LEN}`);
    }
    const block = { base, len: net.len };
    const bound = (field: 'SubnetMin' | 'SubnetMax'): number | undefined => {
      const text = cfg[field];
      if (text === undefined) return undefined;
      if (!isIPv4(text)) return void fail(field, 'not an IPv4 address');
      const ip = ipToInt(text);
      if (!containsAddress(block, ip)) return void fail(field, `outside the network ${cfg.Network}`);
      if (networkOf(ip, subnetLen) !== ip) return void fail(field, `not the start of a /${subnetLen} subnet`);
      return ip;
    };
    const min = bound('SubnetMin');
    const max = bound('SubnetMax');
    if (max !== undefined && max > lastAddress(block) + 1 - blockSize(subnetLen)) {
      fail('SubnetMax', `outside the network ${cfg.Network}`);
    }
    if (min !== undefined && max !== undefined && min > max) fail('SubnetMax', `is below SubnetMin ${cfg.SubnetMin}`);
  });

/** Where `path` points in the raw input, for the message. */
function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** Validates a network config (JSON text or object) and fills in defaults; throws WeftError naming field and value. */
export function parseNetworkConfig(input: string | unknown): NetworkConfig {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (err) {
      throw new WeftError(`invalid network config: not JSON (${(err as Error).message})`);
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new WeftError(`invalid network config: expected a JSON object, got ${JSON.stringify(raw)}`);
  }
  const res = schema.safeParse(raw);
  if (!res.success) {
    const issue = res.error.issues[0]!;
    const field = issue.path.map(String).join('.') || '(config)';
    const value = valueAt(raw, issue.path);
    if (value === undefined && issue.code === 'invalid_type') throw new WeftError(`invalid network config: ${field} is required`);
    const shown = value === undefined ? field : `${field} ${JSON.stringify(value)}`;
    throw new WeftError(`invalid network config: ${shown}: ${issue.message}`);
  }
  const { Network, SubnetLen, SubnetMin, SubnetMax, Backend, IPMasq, ...extras } = res.data;
  const backend = backendConfig({ Type: DEFAULT_BACKEND, ...(Backend ?? {}) }, raw);
  // flannel's field order, absent optional fields left out, unknown fields kept at the end
  const ordered = { Network, SubnetLen: SubnetLen ?? defaultSubnetLen(parseCidrLoose(Network)!.len), SubnetMin, SubnetMax, Backend: backend, IPMasq };
  for (const k of Object.keys(ordered) as Array<keyof typeof ordered>) if (ordered[k] === undefined) delete ordered[k];
  return { ...ordered, ...extras } as NetworkConfig;
}

/**
 * The Backend part checked against its module's schema and completed with its defaults. A type no module
 * registered is kept as it is here (a newer weft may have written it); creating a network and running one
 * refuse it (see requireBackendType).
 */
function backendConfig(backend: BackendConfig, raw: unknown): BackendConfig {
  const spec = backendSpec(backend.Type);
  if (!spec) return backend;
  if (spec.configSchema) {
    const res = spec.configSchema.safeParse(backend);
    if (!res.success) {
      const issue = res.error.issues[0]!;
      const path = ['Backend', ...issue.path];
      const value = valueAt(raw, path);
      throw new WeftError(`invalid network config: ${path.map(String).join('.')}${value === undefined ? '' : ` ${JSON.stringify(value)}`}: ${issue.message}`);
    }
  }
  const out: BackendConfig = { ...backend };
  for (const [k, v] of Object.entries(spec.defaults ?? {})) if (out[k] === undefined) out[k] = v;
  return out;
}

/** Refuses a backend type no module registered, naming the ones that are. */
export function requireBackendType(type: string): void {
  if (!backendSpec(type)) throw new WeftError(`unknown backend type "${type}" (this weft has: ${backendTypes().join(', ') || 'none registered'})`, 'EBADBACKEND');
}
