import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Agent } from '../agent/agent.js';
import { parseHostPort } from '../agent/metrics.js';
import { removeStaleSocket } from '../agent/api.js';
import { networkKeys } from '../store/layout.js';
import type { Logger } from '../util/log.js';
import { PAGE_HTML } from './page.js';
import { buildSnapshot, snapshotKey, type MapSnapshot, type RawEndpoint } from './snapshot.js';

/**
 * The live web map: a read-only HTTP server (GET only) with the page, its state as JSON and an SSE stream
 * that pushes the state whenever it changes. It listens on 127.0.0.1 by default; a request from anywhere
 * but loopback (or the unix socket) needs the token kept in <state-dir>/ui.token (0600), which `weft ui`
 * prints. Nothing here changes the network.
 */

export interface UiOptions {
  /** "HOST:PORT" or "unix:/path". */
  addr: string;
  stateDir: string;
  log: Logger;
  /** How often the state is rebuilt while a page is open (default 500 ms). */
  pollMs?: number;
}

export interface UiServer {
  url: string;
  token: string;
  close(): Promise<void>;
}

/** The token for non-loopback clients: made once, kept 0600 in the state dir. */
export function uiToken(stateDir: string): string {
  const file = path.join(stateDir, 'ui.token');
  try {
    const t = fs.readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{32,}$/.test(t)) return t;
  } catch {
    /* made below */
  }
  const t = randomBytes(24).toString('hex');
  fs.mkdirSync(stateDir, { recursive: true });
  fs.writeFileSync(file, t + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return t;
}

const isLoopback = (addr: string | undefined) => addr === undefined || addr === '::1' || /^(::ffff:)?127\./.test(addr);

/** Whether a request may see the map: loopback and the unix socket freely, anything else with the token. */
export function allowed(req: { remoteAddress?: string; url: URL; headers: http.IncomingHttpHeaders }, token: string): boolean {
  if (isLoopback(req.remoteAddress)) return true;
  const given = req.url.searchParams.get('token') ?? /(?:^|;\s*)weft_ui=([0-9a-f]+)/.exec(req.headers.cookie ?? '')?.[1] ?? /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  if (!given || given.length !== token.length) return false;
  return timingSafeEqual(Buffer.from(given), Buffer.from(token));
}

/** The map as this agent sees it now: its status (from memory) and every host's endpoint records (one store read per network). */
export async function agentSnapshot(agent: Agent): Promise<MapSnapshot> {
  const st = agent.status();
  const raws: RawEndpoint[] = [];
  for (const r of agent.all()) {
    const root = networkKeys(agent.store, r.name).endpointsRoot;
    for (const e of await agent.store.list(root)) raws.push({ network: r.name, hostId: e.key.slice(root.length).split('/')[0] ?? '', value: e.value });
  }
  return buildSnapshot(st, raws);
}

export async function startUi(agent: Agent, o: UiOptions): Promise<UiServer> {
  const token = uiToken(o.stateDir);
  const clients = new Set<http.ServerResponse>();
  let last: { key: string; json: string } | undefined;
  let timer: NodeJS.Timeout | undefined;

  const refresh = async () => {
    try {
      const snap = await agentSnapshot(agent);
      const key = snapshotKey(snap);
      const json = JSON.stringify(snap);
      const changed = key !== last?.key;
      last = { key, json };
      if (changed) for (const c of clients) c.write(`event: state\ndata: ${json}\n\n`);
    } catch (err) {
      o.log.debug({ err }, 'web map refresh failed (store down?)');
    }
  };
  const poll = () => {
    if (timer || !clients.size) return;
    timer = setInterval(() => {
      if (!clients.size) {
        clearInterval(timer);
        timer = undefined;
        return;
      }
      void refresh();
    }, o.pollMs ?? 500);
    timer.unref();
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://weft');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end('read-only\n');
      return;
    }
    if (!allowed({ remoteAddress: req.socket.remoteAddress, url, headers: req.headers }, token)) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('this page needs ?token=… (run `weft ui` on the host to get the URL)\n');
      return;
    }
    const cookie = url.searchParams.has('token') ? { 'set-cookie': `weft_ui=${token}; HttpOnly; SameSite=Strict; Path=/` } : {};
    const security = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'" };
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', ...security, ...cookie }).end(PAGE_HTML);
    } else if (url.pathname === '/api/state') {
      agentSnapshot(agent).then(
        (s) => res.writeHead(200, { 'content-type': 'application/json', ...security }).end(JSON.stringify(s)),
        (err) => res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: (err as Error).message })),
      );
    } else if (url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', ...security, connection: 'keep-alive' });
      res.write('retry: 1000\n\n');
      clients.add(res);
      req.on('close', () => clients.delete(res));
      // the new client gets the current state at once
      void agentSnapshot(agent)
        .then((s) => {
          const json = JSON.stringify(s);
          last ??= { key: snapshotKey(s), json };
          res.write(`event: state\ndata: ${json}\n\n`);
        })
        .catch(() => {});
      poll();
    } else res.writeHead(404, { 'content-type': 'text/plain' }).end('not here\n');
  });

  let url: string;
  if (o.addr.startsWith('unix:')) {
    const sock = o.addr.slice(5);
    await removeStaleSocket(sock);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sock, () => resolve());
    });
    fs.chmodSync(sock, 0o600);
    url = `unix:${sock}`;
  } else {
    const { host, port } = parseHostPort(o.addr, '--ui-addr');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const actual = (server.address() as { port: number }).port;
    url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}/`;
  }
  agent.ui = { url, token };
  o.log.info({ url }, 'web map listening');
  return {
    url,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        if (timer) clearInterval(timer);
        for (const c of clients) c.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
