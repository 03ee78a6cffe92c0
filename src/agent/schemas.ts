import { z } from 'zod';
import { dnsNameProblem } from '../dns/records.js';
import { isIPv4, parseCidrLoose } from '../net/ipv4.js';
import { checkName } from '../store/layout.js';
import { WeftError } from '../util/errors.js';
import type { AttachRequest, DetachRequest } from './types.js';

/**
 * zod schemas of every API request body (the shapes are in ./types.ts). Everything that arrives on the
 * socket is untrusted: serveApi() checks each body against its route's schema before the handler sees it and
 * answers 400 naming the field at fault (`invalid /attach request: container: expected string, got number`).
 */

/** Largest request body the API (and the Docker plugin socket) reads; larger ones get 413 unread. */
export const MAX_BODY_BYTES = 64 * 1024;

/** Longest container reference: a netns name is a file name (255), a /proc/PID/ns/net path far shorter. */
const MAX_CONTAINER = 255;

/**
 * A Linux interface name as `ip` will take it: 1–15 characters (IFNAMSIZ 16 with the NUL), no '/', ':' or
 * white space (the kernel's dev_valid_name). weft asks for a little more: letters, digits, '_', '.', '-',
 * starting with a letter, so that a name can never be read as an option or split an `ip -batch` line.
 */
export const IFNAME_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/;

/** A DNS name: labels of 1–63 letters, digits and '-' (not at either end), separated by '.', 253 at most. */
const containerRef = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(MAX_CONTAINER, `longer than ${MAX_CONTAINER} characters`)
  // eslint-disable-next-line no-control-regex
  .refine((s) => !/[\x00-\x1f\x7f]/.test(s), 'contains control characters');

const networkName = z.string().refine(
  (s) => {
    try {
      checkName('network name', s);
      return true;
    } catch {
      return false;
    }
  },
  "not a network name (letters, digits, '.', '_' and '-', at most 63)",
);

const address = z
  .string()
  .refine((s) => isIPv4(s) || (parseCidrLoose(s)?.len ?? 0) > 0, 'not an IPv4 address (10.5.72.9 or 10.5.72.9/24)');

const ifname = z.string().regex(IFNAME_RE, "not an interface name (1–15 letters, digits, '_', '.', '-', starting with a letter)");

const dnsName = z.string().superRefine((s, ctx) => {
  const why = dnsNameProblem(s);
  if (why) ctx.addIssue({ code: 'custom', message: `not a DNS name: ${why}` });
});

export const attachRequestSchema = z.strictObject({
  container: containerRef,
  network: networkName.optional(),
  address: address.optional(),
  name: dnsName.optional(),
  ifname: ifname.optional(),
});

export const detachRequestSchema = z.strictObject({
  container: containerRef,
  network: networkName.optional(),
});

/** `weft docker-opts [--network N]`: the network whose host bridge becomes docker0 (default: the default network). */
export const dockerOptsRequestSchema = z.union([z.undefined(), z.null(), z.strictObject({ network: networkName.optional() })]);

/** `weft rotate-keys [--network N]`: every network with keys, or the named one. */
export const rotateKeysRequestSchema = z.union([z.undefined(), z.null(), z.strictObject({ network: networkName.optional() })]);

// The schemas parse into the request types of ./types.ts (a compile error here when the two drift apart).
type Parses<S extends z.ZodType, T> = z.infer<S> extends T ? true : false;
type Assert<T extends true> = T;
export type SchemasMatchTypes = [Assert<Parses<typeof attachRequestSchema, AttachRequest>>, Assert<Parses<typeof detachRequestSchema, DetachRequest>>];

/** Routes that take no body accept none, `{}` or `null`. */
export const emptyRequestSchema = z.union([z.undefined(), z.null(), z.strictObject({})]);

/** What a JSON value is, in words for a message ("number", "array", "null"). */
export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** One line for the first issue: `container: expected string, got number`, `ifname: not an interface name …`. */
export function describeIssue(error: z.ZodError, input: unknown): string {
  const issue = error.issues[0]!;
  const field = issue.path.map(String).join('.');
  const at = field ? `${field}: ` : '';
  if (issue.code === 'invalid_type') {
    const got = valueAt(input, issue.path);
    if (got === undefined && field) return `${field}: required (expected ${issue.expected})`;
    return `${at}expected ${issue.expected === 'object' && !field ? 'a JSON object' : issue.expected}, got ${kindOf(got)}`;
  }
  if (issue.code === 'unrecognized_keys') return `${at}unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  if (issue.code === 'invalid_union' && !field) return `expected no body or {}, got ${kindOf(input)}`;
  return `${at}${issue.message}`;
}

/** Parses `input` with `schema`, or throws a WeftError (HTTP 400) naming the request and the field at fault. */
export function parseRequest<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const res = schema.safeParse(input);
  if (res.success) return res.data;
  throw new WeftError(`invalid ${what} request: ${describeIssue(res.error, input)}`, 'EBADREQUEST');
}
