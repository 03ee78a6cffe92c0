import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { WeftError } from '../util/errors.js';
import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';

/**
 * WireGuard on this host: keys (node's X25519, in WireGuard's base64 form), `wg` from wireguard-tools to
 * read and change a device, and where wireguard-go keeps its control sockets.
 */

/** wireguard-go's control sockets: one directory for the whole machine, whatever the network namespace. */
export const WG_SOCKET_DIR = '/var/run/wireguard';

export function wgSocketPath(ifname: string): string {
  return path.join(WG_SOCKET_DIR, `${ifname}.sock`);
}

// ------------------------------------------------------------------ keys

/** PKCS#8 DER prefix of a raw 32-byte X25519 private key (RFC 8410). */
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A WireGuard key as `wg` prints it: standard base64 of 32 bytes (44 characters, one '=' of padding). */
export function isWgKey(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(s);
}

export interface WgKeyPair {
  privateKey: string;
  publicKey: string;
}

/** The public key of a WireGuard private key (what `wg pubkey` prints). */
export function wgPublicKey(privateKey: string): string {
  if (!isWgKey(privateKey)) throw new WeftError('not a WireGuard private key (44 characters of base64)');
  const der = Buffer.concat([PKCS8_X25519, Buffer.from(privateKey, 'base64')]);
  const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  return Buffer.from(jwk.x!, 'base64url').toString('base64');
}

/** A fresh key pair, clamped as `wg genkey` does (WireGuard clamps again on use; the public key is the same). */
export function generateWgKeyPair(): WgKeyPair {
  const jwk = generateKeyPairSync('x25519').privateKey.export({ format: 'jwk' });
  const raw = Buffer.from(jwk.d!, 'base64url');
  raw[0]! &= 248;
  raw[31]! &= 127;
  raw[31]! |= 64;
  const privateKey = raw.toString('base64');
  return { privateKey, publicKey: wgPublicKey(privateKey) };
}

/** Writes a private key file atomically with mode 0600 (the mode is set before the key is in it). */
export function writeKeyFile(file: string, privateKey: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.writeFileSync(tmp, `${privateKey}\n`, { mode: 0o600, flag: 'wx' });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

export interface LoadedKey extends WgKeyPair {
  /** What happened: read as it was, generated (none or unreadable), or its mode repaired to 0600. */
  how: 'read' | 'generated' | 'mode-fixed';
  /** Why a file that was there could not be used (it was replaced), or the old mode when repaired. */
  note?: string;
}

/** Reads the private key file, making one (mode 0600) when it is missing or rotten. */
export function loadOrCreateKey(file: string): LoadedKey {
  let text: string | undefined;
  let mode: number | undefined;
  try {
    text = fs.readFileSync(file, 'utf8').trim();
    mode = fs.statSync(file).mode & 0o777;
  } catch {
    /* missing */
  }
  if (text !== undefined && isWgKey(text)) {
    if (mode !== 0o600) {
      fs.chmodSync(file, 0o600);
      return { privateKey: text, publicKey: wgPublicKey(text), how: 'mode-fixed', note: `mode was 0${mode!.toString(8)}` };
    }
    return { privateKey: text, publicKey: wgPublicKey(text), how: 'read' };
  }
  const pair = generateWgKeyPair();
  writeKeyFile(file, pair.privateKey);
  return { ...pair, how: 'generated', ...(text !== undefined ? { note: 'the key file held no valid key' } : {}) };
}

/** A file's permission bits, or undefined when it cannot be read. */
export function fileMode(file: string): number | undefined {
  try {
    return fs.statSync(file).mode & 0o777;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ wg show / wg set

export interface WgPeerState {
  publicKey: string;
  /** "ip:port" or undefined when unknown. */
  endpoint?: string;
  allowedIps: string[];
  /** Seconds since the epoch of the last handshake; 0 = never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  /** Seconds, 0 = off. */
  keepalive: number;
}

export interface WgDeviceState {
  publicKey?: string;
  listenPort: number;
  /** Whether a private key is set (the key itself is never kept or logged). */
  hasPrivateKey: boolean;
  peers: WgPeerState[];
}

const none = (s: string | undefined) => (s === undefined || s === '(none)' || s === '' ? undefined : s);

/** Parses `wg show IF dump` (tab-separated: the interface's line, then one per peer). */
export function parseWgDump(text: string): WgDeviceState {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (!lines.length) throw new WeftError('wg show dump printed nothing');
  const [priv, pub, port] = lines[0]!.split('\t');
  const peers = lines.slice(1).map((l): WgPeerState => {
    const f = l.split('\t');
    const allowed = none(f[3]);
    return {
      publicKey: f[0]!,
      ...(none(f[2]) ? { endpoint: f[2] } : {}),
      allowedIps: allowed ? allowed.split(',').map((s) => s.trim()) : [],
      latestHandshake: Number(f[4]) || 0,
      rxBytes: Number(f[5]) || 0,
      txBytes: Number(f[6]) || 0,
      keepalive: f[7] === 'off' ? 0 : Number(f[7]) || 0,
    };
  });
  return { ...(none(pub) ? { publicKey: pub } : {}), listenPort: Number(port) || 0, hasPrivateKey: none(priv) !== undefined, peers };
}

async function wg(args: readonly string[], sys: NsOpts): Promise<string> {
  const [cmd, argv] = inNetns(sys.netns, 'wg', args);
  return (await run(cmd, argv, { timeoutMs: 10_000 })).stdout;
}

/** The device's state as `wg show IF dump` reports it. */
export async function wgShow(ifname: string, sys: NsOpts = {}): Promise<WgDeviceState> {
  return parseWgDump(await wg(['show', ifname, 'dump'], sys));
}

/** `wg set IF ARGS…` (the arguments from wgSetArgs / peer diffs; a private key only ever as a file path). */
export async function wgSet(ifname: string, args: readonly string[], sys: NsOpts = {}): Promise<void> {
  if (!args.length) return;
  await wg(['set', ifname, ...args], sys);
}

/** Is `wg` (wireguard-tools) installed? */
export async function haveWgTools(): Promise<boolean> {
  return (await run('wg', ['--version'], { allowFail: true }).catch(() => undefined))?.code === 0;
}

/** wireguard-go's binary (Debian package wireguard-go); override with WEFT_WIREGUARD_GO. */
export const WIREGUARD_GO = process.env.WEFT_WIREGUARD_GO ?? 'wireguard-go';
