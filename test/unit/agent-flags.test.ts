import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { MAX_HOST_RECORD_SECONDS, parseDurationSeconds } from '../../src/cli/agent.js';
import { WEFT_BIN } from '../../src/testbed/agents.js';

/** `weft agent --host-record-ttl`: how long a host record outlives its lease and grace (issue 9 item 3). */

test('durations: whole seconds or unit groups (s, m, h, d)', () => {
  assert.equal(parseDurationSeconds('3600'), 3600);
  assert.equal(parseDurationSeconds('0'), 0);
  assert.equal(parseDurationSeconds('45s'), 45);
  assert.equal(parseDurationSeconds('90m'), 5400);
  assert.equal(parseDurationSeconds('12h'), 43_200);
  assert.equal(parseDurationSeconds('7d'), 604_800);
  assert.equal(parseDurationSeconds('1d12h'), 129_600);
  assert.equal(parseDurationSeconds(' 2h '), 7200);
  assert.equal(parseDurationSeconds('3650d'), MAX_HOST_RECORD_SECONDS);
});

test('anything else is refused with the value named', () => {
  for (const v of ['', '-5', '1.5', '5x', 'h', '7 d', '7D', '1e3', '12h30', 'soon']) {
    assert.throws(() => parseDurationSeconds(v), (e: unknown) => e instanceof InvalidArgumentError && e.message === `expected a duration such as 3600, 90m, 12h or 7d, got "${v}"`, v);
  }
  assert.throws(() => parseDurationSeconds('3651d'), /"3651d" is longer than 3650d/);
  assert.throws(() => parseDurationSeconds('99999999999999999999'), /expected a duration/);
});

test('the agent refuses a bad --host-record-ttl before starting anything, naming the flag', () => {
  const r = spawnSync(process.execPath, [WEFT_BIN, 'agent', '--host-record-ttl', '5x', '--state-dir', '/nonexistent/weft-flag-test', '--api', '/nonexistent/weft-flag-test.sock'], { encoding: 'utf8', timeout: 20_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /option '--host-record-ttl <duration>' argument '5x' is invalid\. expected a duration such as 3600, 90m, 12h or 7d, got "5x"/);
  const help = spawnSync(process.execPath, [WEFT_BIN, 'agent', '--help'], { encoding: 'utf8', timeout: 20_000 });
  assert.match(help.stdout, /--host-record-ttl <duration>/);
});
