/** The real-dockerd test harness: two daemons in two network namespaces, each runs a busybox container. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { startDockerd, ensureBusyboxImage, makeNetns, run, type Dockerd } from './helpers/dockerd.js';

test('two dockerd in two network namespaces run busybox and tear down cleanly', { timeout: 180_000 }, async () => {
  const tag = `wdh${process.pid % 100000}`;
  const nsA = await makeNetns(`${tag}a`);
  const nsB = await makeNetns(`${tag}b`);
  const daemons: Dockerd[] = [];
  try {
    const [a, b] = await Promise.all([startDockerd({ netns: nsA.name }), startDockerd({ netns: nsB.name })]);
    daemons.push(a!, b!);
    assert.notEqual(a!.pid, b!.pid);
    // each daemon runs in its namespace: its docker0 bridge exists there, not on the machine
    for (const [d, ns] of [[a!, nsA.name], [b!, nsB.name]] as const) {
      const links = await run('ip', ['-n', ns, '-o', 'link', 'show']);
      assert.match(links.stdout, /docker0/, `docker0 in ${ns}`);
      // the process really is in that netns
      const nsOfPid = await run('readlink', [`/proc/${d.pid}/ns/net`]);
      const nsOfFile = await run('stat', ['-L', '-c', '%i', `/run/netns/${ns}`]);
      assert.equal(nsOfPid.stdout.trim(), `net:[${nsOfFile.stdout.trim()}]`);
      // its /run/docker/plugins is private: a file in its plugin dir is visible only to it
      const mntOfPid = await run('readlink', [`/proc/${d.pid}/ns/mnt`]);
      const mntSelf = await run('readlink', ['/proc/self/ns/mnt']);
      assert.notEqual(mntOfPid.stdout.trim(), mntSelf.stdout.trim());
    }
    await Promise.all([ensureBusyboxImage(a!), ensureBusyboxImage(b!)]);
    const outs = await Promise.all(
      [a!, b!].map((d, i) =>
        d.dockerOk(['run', '--rm', '--network', 'none', 'busybox:local', 'sh', '-c', `echo hello-${i}; ip -o link | wc -l`]),
      ),
    );
    assert.match(outs[0]!, /^hello-0\n1$/);
    assert.match(outs[1]!, /^hello-1\n1$/);
    // a long-running container is removed by stop()
    await a!.dockerOk(['run', '-d', '--name', 'sleeper', '--network', 'none', 'busybox:local', 'sleep', '600']);
    assert.equal(await a!.dockerOk(['inspect', '-f', '{{.State.Running}}', 'sleeper']), 'true');
    const dirs = [a!.dir, b!.dir];
    const pids = [a!.pid, b!.pid];
    await Promise.all(daemons.splice(0).map((d) => d.stop()));
    for (const p of pids) assert.equal(existsSync(`/proc/${p}`), false, `dockerd ${p} gone`);
    for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    for (const dir of dirs) assert.equal(mounts.includes(dir), false, `no mount under ${dir}`);
  } finally {
    await Promise.all(daemons.map((d) => d.stop().catch(() => {})));
    await nsA.remove();
    await nsB.remove();
  }
});
