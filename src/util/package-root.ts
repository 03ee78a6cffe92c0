import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The directory of weft's package.json, found upwards from `moduleUrl` (a module's import.meta.url). Files
 * beside the code (native binaries under build/, dist/cni/, C sources) are found from here, so the same
 * module works from tsc's output (dist/src/…) and from the bundle (dist/bundle/, scripts/bundle.mjs).
 */
export function packageRoot(moduleUrl: string): string {
  const start = path.dirname(fileURLToPath(moduleUrl));
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'bin/weft'))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(start, '../../../..');
  }
}
