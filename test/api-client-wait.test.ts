/**
 * The CLI's client waits for an agent that takes longer than Node's 5 s keep-alive socket timeout, in real
 * time (the unit tier checks the cause, an idle socket timeout, without the wait). No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { callAgent } from '../src/agent/client.js';
import { slowServer } from './helpers/slow-server.js';

test('a call waits for an agent that takes longer than 5 s', async () => {
  await slowServer(6500, async (sock) => {
    const ep = await callAgent<{ address: string }>(sock, 'POST', '/attach', { container: 'c1' });
    assert.equal(ep.address, '10.5.0.2/24');
  });
});
