import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { callAgent, DEFAULT_API_SOCKET } from '../agent/client.js';
import { WeftError } from '../util/errors.js';
import { timeoutMs, timeoutOption } from './options.js';
import { printJson } from './output.js';

/** The URL to open: loopback as is; any other address carries the token. */
export function uiUrl(ui: { url: string; token: string }): string {
  const loopback = /^http:\/\/(127\.|localhost|\[::1\])/.test(ui.url);
  return loopback || ui.url.startsWith('unix:') ? ui.url : `${ui.url}?token=${ui.token}`;
}

/** `weft ui`: prints (and with --open opens) the URL of the agent's live web map. */
export function registerUi(program: Command): void {
  program
    .command('ui')
    .description("print the URL of this host's live network map (with --open, open it in a browser)")
    .option('--api <sock>', 'agent API socket', DEFAULT_API_SOCKET)
    .option('--open', 'open it with xdg-open')
    .addOption(timeoutOption())
    .option('--json', 'print JSON')
    .action(async (o) => {
      const ui = await callAgent<{ url?: string; token?: string; error?: string }>(o.api, 'GET', '/ui', undefined, { timeoutMs: timeoutMs(o) });
      if (!ui.url || !ui.token) throw new WeftError(ui.error ?? 'the agent serves no web map');
      const url = uiUrl({ url: ui.url, token: ui.token });
      if (o.json) printJson({ url, token: ui.token });
      else if (url.startsWith('unix:'))
        process.stdout.write(`${url}\n(a unix socket: forward it, e.g. socat TCP-LISTEN:9403,bind=127.0.0.1,fork ${url.replace(/^unix:/, 'UNIX-CONNECT:')}, then open http://127.0.0.1:9403/)\n`);
      else process.stdout.write(`${url}\n${url.includes('token=') ? '' : `(from another machine: start the agent with --ui-addr ADDR:PORT and use ?token=${ui.token})\n`}`);
      if (o.open) spawn('xdg-open', [url], { stdio: 'ignore', detached: true }).on('error', () => process.stderr.write('weft: cannot run xdg-open; open the URL by hand\n')).unref();
    });
}
