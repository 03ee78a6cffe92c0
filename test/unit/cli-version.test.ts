/** `weft --version` / `weft -V` print the package's version, as flanneld's and docker's flags do. No root needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../src/util/package-root.js';
import { weftInProcess } from '../helpers/cli.js';

test('weft --version and -V print the version in package.json', async () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(packageRoot(import.meta.url), 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await weftInProcess([flag]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
  }
});
