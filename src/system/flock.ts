import { createRequire } from 'node:module';
import path from 'node:path';
import { packageRoot } from '../util/package-root.js';

/**
 * flock(2) from weft's small native addon (src/system/native/flock.c, built by `npm run build:native`). A lock
 * belongs to the open file it was taken on: it is held until that descriptor is closed or the process ends in
 * any way (kill -9 included), and a second open of the same file, in this process or another, is refused.
 * Node opens files close-on-exec, so processes the agent starts never inherit it.
 */
export const FLOCK_ADDON = path.join(packageRoot(import.meta.url), 'build/Release/weft_flock.node');

interface FlockAddon {
  tryLockExclusive(fd: number): boolean;
}

let addon: FlockAddon | undefined;

/** Takes the exclusive lock on `fd` if it is free: true when taken, false when another open file holds it. */
export function tryLockExclusive(fd: number): boolean {
  addon ??= createRequire(import.meta.url)(FLOCK_ADDON) as FlockAddon;
  return addon.tryLockExclusive(fd);
}
