import type { z } from 'zod';
import { WeftError } from '../util/errors.js';
import type { BackendConfig } from './types.js';

/**
 * The pure half of a backend module: what config validation, `weft network create` and the Docker plugin
 * need to know about a data plane without touching the kernel. Backend modules (src/backends/<name>/)
 * register it through src/backends/registry.ts; this layer only keeps the table.
 */

/** A `weft network create` option a backend takes: `--vni 7` sets Backend.VNI = 7. */
export interface BackendOption {
  /** Flag without dashes, e.g. "vni". Also the Docker `-o` key (with or without a "weft." prefix). */
  flag: string;
  /** The Backend config field it sets, e.g. "VNI". */
  field: string;
  description: string;
  kind: 'int' | 'string' | 'strings';
}

export interface BackendSpec {
  /** flannel's name where flannel has one: host-gw, vxlan, udp, … */
  type: string;
  /** One line for `weft network create --help` and docs. */
  description: string;
  /** zod schema of the Backend fields this backend owns (besides Type); unknown fields are kept. */
  configSchema?: z.ZodType;
  /** Defaults filled in when the config leaves a field out. */
  defaults?: Partial<BackendConfig>;
  /** Fill in cluster-unique ids (a VNI) given the Backend configs of the store's other networks. */
  allocateIds?(config: BackendConfig, others: BackendConfig[]): BackendConfig;
  /** Why `config` cannot coexist with another network of the same type (e.g. the same VNI): the whole message, or undefined. */
  conflict?(config: BackendConfig, other: { name: string; backend: BackendConfig }): string | undefined;
  /** Bytes of encapsulation: container MTU = underlay MTU − overhead. */
  mtuOverhead: number;
  /** Options of `weft network create` and Docker's `-o` that map to Backend fields. */
  options?: BackendOption[];
  /**
   * Containers sit on the hosts' own segment (bridge, macvlan): the network may be the underlay's subnet,
   * so the "network overlaps a route of this host" refusal does not apply.
   */
  sharesUnderlay?: boolean;
}

const specs = new Map<string, BackendSpec>();

export function registerBackendSpec(spec: BackendSpec): void {
  specs.set(spec.type, spec);
}

/** The registered spec of a backend type, or undefined. */
export function backendSpec(type: string): BackendSpec | undefined {
  return specs.get(type);
}

/** Every registered backend type, in registration order. */
export function backendTypes(): string[] {
  return [...specs.keys()];
}

/** Every option any registered backend takes (one per flag; the first module's description). */
export function allBackendOptions(): Array<BackendOption & { backends: string[] }> {
  const byFlag = new Map<string, BackendOption & { backends: string[] }>();
  for (const spec of specs.values()) {
    for (const o of spec.options ?? []) {
      const seen = byFlag.get(o.flag);
      if (seen) {
        seen.backends.push(spec.type);
        if (!seen.description.includes(o.description)) seen.description += `; ${spec.type}: ${o.description}`;
      }
      else byFlag.set(o.flag, { ...o, backends: [spec.type] });
    }
  }
  return [...byFlag.values()];
}

/**
 * The Backend fields that option values set for backend `type` (`--vni 7`, Docker's `-o vni=7`): `get`
 * answers the raw text of a flag or undefined. A value of the wrong kind, or an option another backend
 * takes but this one does not, is refused naming the flag. The same code serves the CLI and the Docker plugin.
 */
export function backendFieldsFromOptions(type: string, get: (flag: string) => string | undefined, how: (flag: string) => string = (f) => `--${f}`): Record<string, unknown> {
  const own = new Map((specs.get(type)?.options ?? []).map((o) => [o.flag, o]));
  const out: Record<string, unknown> = {};
  for (const o of allBackendOptions()) {
    const raw = get(o.flag);
    if (raw === undefined) continue;
    const mine = own.get(o.flag);
    if (!mine) throw new WeftError(`${how(o.flag)} is not an option of backend ${type} (it is one of ${o.backends.join(', ')})`);
    if (mine.kind === 'int') {
      if (!/^\d+$/.test(raw.trim())) throw new WeftError(`${how(o.flag)} must be a whole number, got "${raw}"`);
      out[mine.field] = Number(raw.trim());
    } else if (mine.kind === 'strings') out[mine.field] = raw.split(',').map((x) => x.trim()).filter(Boolean);
    else out[mine.field] = raw;
  }
  return out;
}
