/**
 * The attach path's long-lived helpers, without root: weft-netlink's protocol (src/system/netlink.ts) and
 * the kept ebtables-restore (src/system/warm.ts) driven by a stand-in that behaves like it (commits a block,
 * echoes comments with -v, exits with "line N failed" on a bad line).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';
import { ExecError, kernelFailure } from '../../src/system/exec.js';
import { NETLINK_BINARY, NetlinkError, netlinkReady, nlConfigure, nlCreateVeth, nlDeleteLink, stopNetlink } from '../../src/system/netlink.js';
import { stopWarm, warmEbtablesRestore } from '../../src/system/warm.js';

const built = fs.existsSync(NETLINK_BINARY) ? false : 'weft-netlink is not built (npm run build:native)';
/** The client's requests enter network namespaces (setns), which needs CAP_SYS_ADMIN: not for a plain user. */
const privileged = built || (process.getuid?.() === 0 ? false : 'needs root: weft-netlink enters network namespaces (setns needs CAP_SYS_ADMIN), so unprivileged it exits on its first request');

test('weft-netlink answers each request line in order; malformed ones with EINVAL', { skip: built }, () => {
  const r = spawnSync(NETLINK_BINARY, [], { input: 'P\t7\nV\t8\t-\ta\n\nC\t9\t-\teth0\t10.1.2.3/99\t-\t-\nD\t10\t/nonexistent/ns\teth0\nP\t11\n' });
  assert.equal(r.status, 0);
  assert.deepEqual(r.stdout.toString().trim().split('\n'), [
    '7 0',
    '8 22 malformed request: Invalid argument',
    '0 22 malformed request: Invalid argument',
    '9 22 address 10.1.2.3/99: Invalid argument',
    '10 2 enter /nonexistent/ns: No such file or directory',
    '11 0',
  ]);
});

test('the TS client: kernel errors are NetlinkErrors with the errno, classified by kernelFailure', { skip: privileged }, async () => {
  assert.equal(netlinkReady(), true);
  const missing = await nlCreateVeth({ hostIf: 'vwtest0', ifname: 'eth0', mtu: 1500, netns: '/nonexistent-netns-x' }).then(() => undefined, (e: unknown) => e);
  assert.ok(missing instanceof NetlinkError);
  assert.equal(missing.code, 'ENOENT');
  assert.equal(kernelFailure(missing), 'missing');
  assert.match(missing.message, /open \/run\/netns\/\/nonexistent-netns-x|No such file/);
  const bad = await nlConfigure({ netns: { pid: 999_999_999 }, ifname: 'eth0', address: 'nonsense' }).then(() => undefined, (e: unknown) => e);
  assert.ok(bad instanceof NetlinkError);
  assert.equal(bad.code, 'EINVAL');
  // a tab in a field never reaches the helper (it would shift the fields)
  await assert.rejects(nlDeleteLink('a\tb'), (e: unknown) => e instanceof NetlinkError && e.code === 'EINVAL');
  // concurrent requests each get their own answer
  const all = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => nlDeleteLink(`x${i}`, { pid: 999_999_000 + i })));
  assert.ok(all.every((s) => s.status === 'rejected' && (s.reason as NetlinkError).code === 'ENOENT' && (s.reason as Error).message.includes(`/proc/${999_999_000 + all.indexOf(s)}/ns/net`)));
  stopNetlink();
});

test('kept ebtables-restore: each block is acknowledged; a failing block fails alone and later blocks go to a new process', async () => {
  const log = fs.mkdtempSync('/tmp/weft-restorer-test-');
  try {
    // a stand-in for `ebtables-restore --noflush -v`: records its PID per block, echoes comments, dies on FAIL
    const script = `n=0; while IFS= read -r l; do n=$((n+1)); case "$l" in FAIL*) echo "fake: line $n failed: $l" >&2; exit 1;; COMMIT) echo $$ >> ${log}/pids;; '#'*) [ "$1" = -v ] && echo "$l";; esac; done`;
    const argv: [string, string[]] = ['sh', ['-c', script, 'fake-restore']];
    const block = (l: string) => `*filter\n${l}\nCOMMIT\n`;
    const res = await Promise.allSettled([1, 2, 3, 4, 5].map((i) => warmEbtablesRestore(block(i === 3 ? 'FAIL here' : `-A X ${i}`), argv)));
    assert.deepEqual(res.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const err = (res[2] as PromiseRejectedResult).reason as ExecError;
    assert.ok(err instanceof ExecError);
    assert.match(err.stderr, /line \d+ failed: FAIL here/);
    const pids = fs.readFileSync(`${log}/pids`, 'utf8').trim().split('\n');
    assert.equal(pids.length, 4, 'four blocks committed');
    assert.equal(new Set(pids.slice(0, 2)).size, 1, 'blocks before the failure: one process');
    assert.notEqual(pids[2], pids[0], 'blocks after it: a new process');
    // a command that does not exist fails like a spawn of it (EACCES when a PATH directory is unreadable to this user)
    await assert.rejects(warmEbtablesRestore(block('-A X'), ['weft-no-such-restore', []]), /command not found|ENOENT|EACCES/);
  } finally {
    stopWarm();
    fs.rmSync(log, { recursive: true, force: true });
  }
});
