import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileMode, generateWgKeyPair, isWgKey, loadOrCreateKey, wgPublicKey, writeKeyFile } from '../../src/system/wireguard.js';

const haveWg = (() => {
  try {
    execFileSync('wg', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test('a generated key pair has WireGuard\'s base64 form and a clamped private key', () => {
  const { privateKey, publicKey } = generateWgKeyPair();
  assert.ok(isWgKey(privateKey), privateKey);
  assert.ok(isWgKey(publicKey), publicKey);
  const raw = Buffer.from(privateKey, 'base64');
  assert.equal(raw.length, 32);
  assert.equal(raw[0]! & 7, 0);
  assert.equal(raw[31]! & 0xc0, 0x40);
  assert.notEqual(generateWgKeyPair().privateKey, privateKey);
});

test('the public key is the one in RFC 7748\'s X25519 test vector', () => {
  // Alice's private key and public key from RFC 7748 §6.1
  const priv = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64');
  const pub = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
  assert.equal(wgPublicKey(priv), pub);
});

test('the public key is what `wg pubkey` prints', { skip: haveWg ? false : 'wg (wireguard-tools) is not installed' }, () => {
  for (let i = 0; i < 3; i++) {
    const { privateKey, publicKey } = generateWgKeyPair();
    assert.equal(execFileSync('wg', ['pubkey'], { input: privateKey }).toString().trim(), publicKey);
    const theirs = execFileSync('wg', ['genkey']).toString().trim();
    assert.equal(wgPublicKey(theirs), execFileSync('wg', ['pubkey'], { input: theirs }).toString().trim());
  }
});

test('isWgKey refuses what is not 32 bytes of standard base64', () => {
  for (const bad of [undefined, 42, '', 'abc', 'A'.repeat(44), `${'A'.repeat(43)}=`.replace(/A=$/, 'B='), `${'-'.repeat(43)}=`, `${'A'.repeat(42)}A==`]) {
    assert.equal(isWgKey(bad), false, String(bad));
  }
  assert.equal(isWgKey(`${'A'.repeat(43)}=`), true);
});

test('key file: made with mode 0600, read back unchanged, a loose mode repaired, a rotten file replaced', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-wgkey-'));
  try {
    const file = path.join(dir, 'wireguard.key');
    const a = loadOrCreateKey(file);
    assert.equal(a.how, 'generated');
    assert.equal(fileMode(file), 0o600);
    const b = loadOrCreateKey(file);
    assert.equal(b.how, 'read');
    assert.equal(b.publicKey, a.publicKey);
    fs.chmodSync(file, 0o644);
    const c = loadOrCreateKey(file);
    assert.equal(c.how, 'mode-fixed');
    assert.equal(c.note, 'mode was 0644');
    assert.equal(c.publicKey, a.publicKey);
    assert.equal(fileMode(file), 0o600);
    fs.writeFileSync(file, 'garbage\n');
    const d = loadOrCreateKey(file);
    assert.equal(d.how, 'generated');
    assert.notEqual(d.publicKey, a.publicKey);
    assert.equal(fileMode(file), 0o600);
    // rotation writes atomically over the old file, keeping 0600
    const next = generateWgKeyPair();
    writeKeyFile(file, next.privateKey);
    assert.equal(fs.readFileSync(file, 'utf8').trim(), next.privateKey);
    assert.equal(fileMode(file), 0o600);
    assert.deepEqual(fs.readdirSync(dir), ['wireguard.key']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
