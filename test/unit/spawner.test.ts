/**
 * The attach path's command runner (src/system/warm.ts): one long-lived bash runs commands with their stdin,
 * concurrently, and reports each one's exit status and output like exec.ts's `run`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExecError } from '../../src/system/exec.js';
import { runJob, stopWarm } from '../../src/system/warm.js';

test('stdin arrives byte for byte, quotes and here-document look-alikes included', async () => {
  const input = `a 'quoted' "line" $HOME \`x\`\n__WEFT_EOF_1__\nEOF\nlast\n`;
  // the command fails on purpose so that its output (what it read) comes back in the error
  const err = await runJob('sh', ['-c', 'cat; exit 3'], input).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ExecError);
  assert.equal(err.exitCode, 3);
  assert.equal(err.stderr + err.stdout, input); // (a look-alike of its own delimiter sends a job to a plain spawn)
});

test('a here-document delimiter of another job in the input is passed through', async () => {
  const err = await runJob('sh', ['-c', 'cat; exit 4'], '__WEFT_EOF_999999__\n').then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ExecError);
  assert.equal(err.exitCode, 4);
  assert.equal(err.stderr, '__WEFT_EOF_999999__\n');
});

test('many jobs at once each get their own status and output', async () => {
  const n = 40;
  const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => runJob('sh', ['-c', `read x; [ "$x" = ${i} ] && [ $((x % 3)) -ne 0 ] || { echo "job $x"; exit 1; }`], `${i}\n`)));
  results.forEach((r, i) => {
    if (i % 3 !== 0) assert.equal(r.status, 'fulfilled', `job ${i}`);
    else {
      assert.equal(r.status, 'rejected', `job ${i}`);
      assert.match(((r as PromiseRejectedResult).reason as Error).message, new RegExp(`job ${i}\\b`));
    }
  });
});

test('a missing command fails like a spawn of it', async () => {
  // EACCES / "Permission denied" when a PATH directory is unreadable to this user (root's dirs, run as nobody)
  await assert.rejects(runJob('weft-no-such-command', [], ''), /command not found|No such file|ENOENT|EACCES|Permission denied/);
  stopWarm();
});
