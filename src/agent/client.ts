import { createConnection } from 'node:net';
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
 *
 * Spoken as HTTP/1.0 over a plain socket rather than with node:http: loading node:http was a fifth of a
 * `weft attach`'s run time (issue 15: the CLI should cost little more than Node's own start). Node's server
 * answers a 1.0 request without chunked encoding and closes the connection after the response, so the
 * body is everything after the header, up to the end of the stream.
 */
export function callAgent<T>(socketPath: string, method: 'GET' | 'POST', path: string, body?: unknown, o: CallOptions = {}): Promise<T> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_SECONDS * 1000;
  return new Promise<T>((resolve, reject) => {
    const sock = createConnection({ path: socketPath });
    const chunks: Buffer[] = [];
    let failed = false;
    const timer = timeoutMs
      ? setTimeout(() => {
          const check = o.checkWith ? `; check with '${o.checkWith}' before retrying` : '';
          sock.destroy(
            new WeftError(
              `the agent at ${socketPath} did not answer ${method} ${path} within ${formatSeconds(timeoutMs)}; it may still complete the request${check} (wait longer with --timeout SECONDS)`,
              AGENT_TIMEOUT,
            ),
          );
        }, timeoutMs)
      : undefined;
    sock.on('connect', () => {
      const head = `${method} ${path} HTTP/1.0\r\nhost: localhost\r\n${payload ? `content-type: application/json\r\ncontent-length: ${payload.length}\r\n` : ''}\r\n`;
      // not end(): Node's server aborts a request whose client half-closes (httpAllowHalfOpen is off)
      sock.write(payload ? Buffer.concat([Buffer.from(head, 'latin1'), payload]) : head);
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      failed = true;
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new WeftError(`no weft agent at ${socketPath} (start one with 'weft agent', or pass --api SOCK)`, NO_AGENT));
      } else if (err.code === 'EACCES') {
        reject(new WeftError(`permission denied on ${socketPath}: the agent's API is for root and its --api-group`, 'EACCES'));
      } else reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (failed) return;
      const res = parseResponse(Buffer.concat(chunks));
      if (!res) {
        reject(new WeftError(`the agent at ${socketPath} closed the connection without a complete answer to ${method} ${path}`));
        return;
      }
      let parsed: unknown = res.text;
      if (res.contentType.includes('json')) {
        try {
          parsed = JSON.parse(res.text);
        } catch {
          /* keep text */
        }
      }
      if (res.status >= 300) {
        const msg = (parsed as { error?: string })?.error ?? `agent answered ${res.status}: ${res.text.slice(0, 200)}`;
        reject(new WeftError(msg));
      } else resolve(parsed as T);
    });
  });
}

/** Status, content type and body of a whole HTTP/1.x response without chunked encoding; undefined if incomplete. */
export function parseResponse(raw: Buffer): { status: number; contentType: string; text: string } | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
  if (!m) return undefined;
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  let bodyBuf = raw.subarray(end + 4);
  const len = headers.get('content-length');
  if (len !== undefined && /^\d+$/.test(len)) {
    if (bodyBuf.length < Number(len)) return undefined;
    bodyBuf = bodyBuf.subarray(0, Number(len));
  }
  if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) return undefined;
  return { status: Number(m[1]), contentType: headers.get('content-type') ?? '', text: bodyBuf.toString('utf8') };
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
