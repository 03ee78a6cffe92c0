import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

/** An agent stand-in on a unix socket in a temp dir that answers every request after delayMs. */
export async function slowServer(delayMs: number, fn: (sock: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-client-'));
  const sock = path.join(dir, 'slow.sock');
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    req.resume();
    const t = setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ address: '10.5.0.2/24', container: 'c1', network: 'n' }));
    }, delayMs);
    timers.add(t);
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    await fn(sock);
  } finally {
    for (const t of timers) clearTimeout(t);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
