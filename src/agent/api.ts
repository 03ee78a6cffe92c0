import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export type Handler = (body: unknown, url: URL) => Promise<unknown> | unknown;
export interface Route {
  method: 'GET' | 'POST';
  path: string;
  handler: Handler;
  /** Content type of a non-JSON answer (e.g. Prometheus text, the web page). */
  contentType?: string;
}

/**
 * A tiny JSON-over-HTTP server on a unix socket. Handlers return a value (sent as JSON, or as text when the
 * route names a content type) or throw; a WeftError becomes 400 {error}, anything else 500 {error}.
 */
export async function serveApi(socketPath: string, routes: Route[], log: Logger): Promise<http.Server> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  // A socket file left by a killed agent would make listen() fail with EADDRINUSE.
  fs.rmSync(socketPath, { force: true });
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://weft');
    const route = routes.find((r) => r.method === req.method && r.path === url.pathname);
    if (!route) {
      sendJson(res, 404, { error: `no such API: ${req.method} ${url.pathname}` });
      return;
    }
    try {
      const raw = await readBody(req);
      const body = raw.length ? JSON.parse(raw) : undefined;
      const out = await route.handler(body, url);
      if (route.contentType) {
        res.writeHead(200, { 'content-type': route.contentType });
        res.end(String(out));
      } else sendJson(res, 200, out ?? {});
    } catch (err) {
      const user = err instanceof WeftError || err instanceof SyntaxError;
      if (!user) log.error({ err, path: url.pathname }, 'API handler failed');
      sendJson(res, user ? 400 : 500, { error: err instanceof Error ? err.message : String(err) });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
