import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { openStore } from '../src/store/index.js';
import { networkKeys } from '../src/store/layout.js';
import { run } from '../src/system/exec.js';
import { runWeft } from '../src/testbed/agents.js';
import { needsRoot } from './helpers/require-root.js';
import { freePort } from './helpers/ports.js';

/**
 * The live web map in headless Chromium against a real `weft demo` (own prefix, dir and port): the page
 * shows every host and container; a container attached while the page is open appears without a reload;
 * a screenshot is saved in a temp dir (its path printed). `weft demo down` always runs.
 */

const CHROMIUM = '/usr/bin/chromium';
const skip = needsRoot('socat') ?? (fs.existsSync(CHROMIUM) ? undefined : `needs ${CHROMIUM}`);

const prefix = 'wu' + randomBytes(3).toString('hex').slice(0, 5);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ui-demo-'));
const artifacts = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ui-artifacts-'));
let env: NodeJS.ProcessEnv = {};
let browser: Browser | undefined;

after(async () => {
  await browser?.close().catch(() => {});
  if (env.WEFT_DEMO_PREFIX) {
    const down = await runWeft(['demo', 'down'], { env, timeoutMs: 60_000 });
    assert.equal(down.code, 0, down.stderr);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('weft demo prints a live map: every host and container; a container attached and a host joining appear without reload', { timeout: 180_000, skip }, async () => {
  const port = await freePort();
  env = { ...process.env, WEFT_DEMO_PREFIX: prefix, WEFT_DEMO_DIR: dir, WEFT_DEMO_UI_PORT: String(port) };
  const demo = await runWeft(['demo', '--hosts', '3', '--containers', '2', '--json'], { env, timeoutMs: 120_000 });
  assert.equal(demo.code, 0, demo.stderr);
  const result = JSON.parse(demo.stdout) as { ui?: string; containers: Array<{ ns: string; ip: string; host: string; api: string }> };
  assert.equal(result.ui, `http://127.0.0.1:${port}/`);
  // the human output names the URL too (same code path prints it): checked on the JSON field above

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const started = Date.now();
  await page.goto(result.ui!);
  for (const h of ['h1', 'h2', 'h3']) await page.waitForSelector(`.host[data-host="${h}"]`, { timeout: 10_000 });
  const firstPaintMs = await page.evaluate(() => performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint')?.startTime ?? -1);
  const mapShownMs = Date.now() - started;
  console.log(`web map: first contentful paint ${Math.round(firstPaintMs)} ms, all hosts shown ${mapShownMs} ms after navigation`);
  assert.ok(firstPaintMs >= 0, 'the page painted');

  // every container, under its own host, with its address
  for (const c of result.containers) {
    const row = page.locator(`.host[data-host="${c.host}"] .ctr[data-container="${c.ns}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.match((await row.textContent()) ?? '', new RegExp(`${c.ip.replace(/\./g, '\\.')}$`));
  }
  // tunnels from the serving host to both peers
  assert.equal(await page.locator('#links line').count(), 2);

  // a container attached while the page is open appears without a reload
  const h2 = result.containers.find((c) => c.host === 'h2')!;
  const ns = `${prefix}-h2-late`;
  await run('ip', ['netns', 'add', ns]);
  const att = await runWeft(['attach', ns, '--api', h2.api, '--name', 'late', '--json'], { timeoutMs: 30_000 });
  assert.equal(att.code, 0, att.stderr);
  const ip = (JSON.parse(att.stdout) as { address: string }).address.split('/')[0]!;
  const late = page.locator(`.host[data-host="h2"] .ctr[data-container="${ns}"]`);
  await late.waitFor({ timeout: 15_000 });
  assert.equal(await late.textContent(), `late  ${ip}`);

  // a host joining (its lease appears in the store) shows up without a reload too
  const h1 = JSON.parse((await runWeft(['status', '--api', result.containers[0]!.api, '--json'])).stdout) as { publicIp: string };
  const joinerIp = h1.publicIp.replace(/\.\d+$/, '.99'); // on the demo's own underlay switch: nothing answers, nothing leaves
  const store = await openStore(`sqlite://${path.join(dir, 'weft.db')}`, { create: true });
  const key = networkKeys(store, 'demo').subnet('10.244.250.0/24');
  try {
    await store.put(key, JSON.stringify({ PublicIP: joinerIp, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:99' } }), { ttlSeconds: 60 });
    await page.locator(`.host[data-host="${joinerIp}"]`).waitFor({ timeout: 15_000 });
    assert.match((await page.locator(`.host[data-host="${joinerIp}"]`).textContent()) ?? '', /demo 10\.244\.250\.0\/24 · vxlan/);
    await store.delete(key);
    await page.locator(`.host[data-host="${joinerIp}"]`).waitFor({ state: 'detached', timeout: 15_000 });
  } finally {
    await store.delete(key).catch(() => false);
    await store.close();
  }

  // click for details
  await late.click();
  assert.match((await page.locator('#details').textContent()) ?? '', new RegExp(`container late on h2[\\s\\S]*"${ip.replace(/\./g, '\\.')}/`));

  const shot = path.join(artifacts, 'weft-map.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  assert.ok(fs.statSync(shot).size > 10_000);
});
