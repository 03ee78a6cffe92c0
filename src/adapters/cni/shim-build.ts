import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WeftError } from '../../util/errors.js';
import { packageRoot } from '../../util/package-root.js';

/**
 * Builds the weft-cni executable (./shim/weft-cni.c, a ~1 ms forwarder to the agent) into dist/cni/.
 * `npm run build` runs this file; `weft install-cni`, the tests and the bench call ensureShim(), which
 * rebuilds only when the source is newer than the binary.
 */

const ROOT = packageRoot(import.meta.url);
export const SHIM_SOURCE = path.join(ROOT, 'src/adapters/cni/shim/weft-cni.c');
export const SHIM_BINARY = path.join(ROOT, 'dist/cni/weft-cni');

export function ensureShim(): string {
  const src = fs.statSync(SHIM_SOURCE);
  const bin = fs.statSync(SHIM_BINARY, { throwIfNoEntry: false });
  if (bin && bin.mtimeMs >= src.mtimeMs) return SHIM_BINARY;
  fs.mkdirSync(path.dirname(SHIM_BINARY), { recursive: true, mode: 0o755 });
  // Built beside and renamed into place: a runtime may be running the old one, and two builds may race.
  const tmp = `${SHIM_BINARY}.${process.pid}.tmp`;
  const flags = ['-O2', '-Wall', '-s', '-o', tmp, SHIM_SOURCE];
  try {
    try {
      // static: no dynamic loader at start-up (about half of the little the shim costs)
      execFileSync('cc', ['-static', ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw err;
      execFileSync('cc', flags, { stdio: ['ignore', 'ignore', 'pipe'] });
    }
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, SHIM_BINARY);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no C compiler (cc) on this machine' : String((err as { stderr?: Buffer }).stderr ?? err).trim();
    throw new WeftError(`cannot build the weft-cni executable from ${SHIM_SOURCE}: ${why}`);
  }
  return SHIM_BINARY;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  process.stdout.write(`${ensureShim()}\n`);
}
