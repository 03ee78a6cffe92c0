import http from 'node:http';
import { WeftError } from '../util/errors.js';

/** Default path of the agent's API socket (`--api` changes it). */
export const DEFAULT_API_SOCKET = process.env.WEFT_API ?? '/run/weft/weft.sock';
/** Default state dir of the agent (host id, bridge names, subnet.env); `--state-dir` changes it. */
export const DEFAULT_STATE_DIR = process.env.WEFT_STATE_DIR ?? '/var/lib/weft';
/** WeftError code of "no agent listens on that socket" (callers that can do without the agent check it). */
export const NO_AGENT = 'ENOAGENT';
/** WeftError code of "the agent did not answer in time" (it may still be working on the request). */
export const AGENT_TIMEOUT = 'EAGENTTIMEOUT';
/**
 * How long the CLI waits for an answer by default. A mutating call (attach, detach, reset) may wait on the
 * store and the kernel; giving up early while the agent carries on only invites a retry racing the first.
 */
export const DEFAULT_TIMEOUT_SECONDS = 60;

export interface CallOptions {
  /** Give up after this long (whole request, not idle time); default DEFAULT_TIMEOUT_SECONDS, 0: never. */
  timeoutMs?: number;
  /** How to check on the request if it times out, for the message ("weft ps"). */
  checkWith?: string;
}

/**
 * Calls the agent's JSON API over its unix socket. Errors from the agent come back as
 * `{ "error": "..." }` with a non-2xx status and are raised as WeftError with that message.
 */
export function callAgent<T>(socketPath: string, method: 'GET' | 'POST', path: string, body?: unknown, o: CallOptions = {}): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_SECONDS * 1000;
  return new Promise<T>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        // Not the global agent: Node 20's keeps sockets alive with a 5 s idle timeout, which gave up on an
        // agent still working on an attach.
        agent: false,
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
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
    const timer = timeoutMs
      ? setTimeout(() => {
          const check = o.checkWith ? `; check with '${o.checkWith}' before retrying` : '';
          req.destroy(
            new WeftError(
              `the agent at ${socketPath} did not answer ${method} ${path} within ${formatSeconds(timeoutMs)}; it may still complete the request${check} (wait longer with --timeout SECONDS)`,
              AGENT_TIMEOUT,
            ),
          );
        }, timeoutMs)
      : undefined;
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new WeftError(`no weft agent at ${socketPath} (start one with 'weft agent', or pass --api SOCK)`, NO_AGENT));
      } else if (err.code === 'EACCES') {
        reject(new WeftError(`permission denied on ${socketPath}: the agent's API is for root and its --api-group`, 'EACCES'));
      } else reject(err);
    });
    if (payload) req.write(payload);
    req.end();
  });
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
