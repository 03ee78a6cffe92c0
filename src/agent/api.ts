import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { z } from 'zod';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { emptyRequestSchema, MAX_BODY_BYTES, parseRequest } from './schemas.js';

export type Handler = (body: unknown, url: URL) => Promise<unknown> | unknown;
export interface Route {
  method: 'GET' | 'POST';
  path: string;
  handler: Handler;
  /** Schema of the request body (./schemas.ts); the handler gets the parsed value. None: no body accepted. */
  body?: z.ZodType;
  /** Content type of a non-JSON answer (e.g. Prometheus text, the web page). */
  contentType?: string;
}

export interface ApiOptions {
  /** Mode of the socket file (default 0660: root and the API group may call the agent, nobody else). */
  mode?: number;
  /** Group id given the socket (`--api-group`). */
  gid?: number;
}

/** Mode of the API socket: connecting needs write permission, so 0660 keeps everyone but root and the group out. */
export const API_SOCKET_MODE = 0o660;

/** A request body over the limit: answered 413 before the rest of it is read. */
class TooLarge extends WeftError {
  constructor() {
    super(`request body larger than ${MAX_BODY_BYTES} bytes`, 'ETOOLARGE');
  }
}

/**
 * A tiny JSON-over-HTTP server on a unix socket. Bodies are limited to MAX_BODY_BYTES (413, unread) and
 * checked against the route's schema (400 naming the field). Handlers return a value (sent as JSON, or as
 * text when the route names a content type) or throw; a WeftError becomes 400 {error}, anything else 500.
 */
export async function serveApi(socketPath: string, routes: Route[], log: Logger, o: ApiOptions = {}): Promise<http.Server> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  // A socket file left by a killed agent would make listen() fail with EADDRINUSE; a live one is refused.
  await removeStaleSocket(socketPath);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://weft');
    const route = routes.find((r) => r.method === req.method && r.path === url.pathname);
    if (!route) {
      refuse(req, res, 404, `no such API: ${req.method} ${url.pathname}`);
      return;
    }
    let raw: string;
    try {
      raw = await readBody(req, MAX_BODY_BYTES);
    } catch (err) {
      if (err instanceof TooLarge) refuse(req, res, 413, err.message);
      else req.destroy();
      return;
    }
    try {
      let parsed: unknown;
      try {
        parsed = raw.trim() ? JSON.parse(raw) : undefined;
      } catch {
        throw new WeftError(`request body of ${url.pathname} is not JSON`);
      }
      const body = parseRequest(route.body ?? emptyRequestSchema, parsed, url.pathname);
      const out = await route.handler(body, url);
      if (route.contentType) {
        res.writeHead(200, { 'content-type': route.contentType });
        res.end(String(out));
      } else sendJson(res, 200, out ?? {});
    } catch (err) {
      const user = err instanceof WeftError;
      if (!user) log.error({ err, path: url.pathname }, 'API handler failed');
      sendJson(res, user ? 400 : 500, { error: err instanceof Error ? err.message : String(err) });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The socket is bound inside listen(): a umask around it keeps the file from ever being wider than 0660
    // (connecting to a unix socket needs write permission on it); chmod then sets the mode exactly.
    const old = process.umask(0o177);
    try {
      server.listen(socketPath, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  fs.chmodSync(socketPath, o.mode ?? API_SOCKET_MODE);
  if (o.gid !== undefined) fs.chownSync(socketPath, process.getuid?.() ?? 0, o.gid);
  return server;
}

/**
 * Removes a socket file no process listens on any more. Refuses when a process answers on it (another
 * agent) and when the path is something other than a socket (a typo in --api must not delete a file).
 */
export async function removeStaleSocket(socketPath: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new WeftError(`${socketPath} exists and is not a socket; pass another --api path`, 'EAPIINUSE');
  if (await socketAnswers(socketPath)) {
    throw new WeftError(`another process (a weft agent?) listens on ${socketPath}: stop it first, or pass another --api path`, 'EAPIINUSE');
  }
  fs.rmSync(socketPath, { force: true });
}

/** True when something accepts connections on the unix socket. */
export function socketAnswers(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const done = (v: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    // A listener that accepts nothing within the time (hung) still holds the socket: count it as live.
    const t = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'EACCES' || err.code === 'EAGAIN'));
  });
}

/**
 * Reads a request body of at most `limit` bytes. A declared or streamed body over the limit rejects with
 * TooLarge at once; the rest is never buffered.
 */
export function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new TooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(new TooLarge());
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Answers an error and closes the connection without reading what is left of the request. */
function refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, message: string): void {
  const text = JSON.stringify({ error: message });
  res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' });
  res.end(text, () => req.socket.destroy());
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
