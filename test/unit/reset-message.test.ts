import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resetMessage } from '../../src/agent/reset.js';

/** `weft reset` says it removed everything only when nothing of weft's is left on the host. */
test('reset: success only when no device is left; otherwise names what is left', () => {
  assert.deepEqual(resetMessage({ left: [] }), { ok: true, text: "reset: removed weft's devices, rules and leases on this host" });
  assert.deepEqual(resetMessage({}), { ok: true, text: "reset: removed weft's devices, rules and leases on this host" }, "the agent's own reset (no list)");
  assert.deepEqual(resetMessage({ left: ['weft.1', 'weft0'] }), { ok: false, text: 'reset: could not remove weft.1, weft0 (see the log above); the leases were given back' });
});
