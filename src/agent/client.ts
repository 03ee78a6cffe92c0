import http from 'node:http';
import { WeftError } from '../util/errors.js';

/** Default path of the agent's API socket (`--api` changes it). */
export const DEFAULT_API_SOCKET = process.env.WEFT_API ?? '/run/weft/weft.sock';
/** Default state dir of the agent (host id, bridge names, subnet.env); `--state-dir` changes it. */
export const DEFAULT_STATE_DIR = process.env.WEFT_STATE_DIR ?? '/var/lib/weft';
/** WeftError code of "no agent listens on that socket" (callers that can do without the agent check it). */
export const NO_AGENT = 'ENOAGENT';

/**
 * Calls the agent's JSON API over its unix socket. Errors from the agent come back as
 * `{ "error": "..." }` with a non-2xx status and are raised as WeftError with that message.
 */
export function callAgent<T>(
  socketPath: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  o: { timeoutMs?: number } = {},
): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        ...(o.timeoutMs ? { timeout: o.timeoutMs } : {}),
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          if ((res.headers['content-type'] ?? '').includes('json')) {
            try {
              parsed = JSON.parse(text);
            } catch {
              /* keep text */
            }
          }
          if ((res.statusCode ?? 500) >= 300) {
            const msg = (parsed as { error?: string })?.error ?? `agent answered ${res.statusCode}: ${text.slice(0, 200)}`;
            reject(new WeftError(msg));
          } else resolve(parsed as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new WeftError(`the agent at ${socketPath} did not answer`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new WeftError(`no weft agent at ${socketPath} (start one with 'weft agent', or pass --api SOCK)`, NO_AGENT));
      } else reject(err);
    });
    if (payload) req.write(payload);
    req.end();
  });
}
