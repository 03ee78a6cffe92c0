/**
 * A throwaway PKI for TLS tests, made with openssl in a temp dir: a CA, a server certificate for
 * 127.0.0.1/localhost and a client certificate signed by it, plus a client certificate from a second,
 * untrusted CA. Keys are P-256 (fast to make) and written 0600.
 *
 *   const pki = makeTestPki(dir);   // pki.ca, pki.server.{cert,key}, pki.client.{cert,key}, pki.rogue.{cert,key}
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertPair {
  cert: string;
  key: string;
}

export interface TestPki {
  /** The CA certificate etcd and the clients trust. */
  ca: string;
  server: CertPair;
  client: CertPair;
  /** A client certificate signed by another CA: must be refused. */
  rogue: CertPair;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): CertPair {
  const cnf = join(dir, `${name}.cnf`);
  writeFileSync(
    cnf,
    `[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = ${name}\n` +
      `[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n`,
  );
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl(dir, ['req', '-x509', '-config', cnf, '-extensions', 'v3_ca', ...EC, '-keyout', pair.key, '-out', pair.cert, '-days', '2']);
  chmodSync(pair.key, 0o600);
  return pair;
}

function makeLeaf(dir: string, name: string, ca: CertPair, ext: string): CertPair {
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  writeFileSync(extFile, `basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n${ext}\n`);
  openssl(dir, ['req', '-new', ...EC, '-keyout', pair.key, '-out', csr, '-subj', `/CN=${name}`]);
  const serial = `0x${Math.floor(Math.random() * 2 ** 48).toString(16)}`;
  openssl(dir, ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial, '-days', '2', '-out', pair.cert, '-extfile', extFile]);
  chmodSync(pair.key, 0o600);
  return pair;
}

export function makeTestPki(dir: string): TestPki {
  const ca = makeCa(dir, 'weft-test-ca');
  const rogueCa = makeCa(dir, 'rogue-ca');
  return {
    ca: ca.cert,
    server: makeLeaf(dir, 'server', ca, 'extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost'),
    client: makeLeaf(dir, 'client', ca, 'extendedKeyUsage = clientAuth'),
    rogue: makeLeaf(dir, 'rogue', rogueCa, 'extendedKeyUsage = clientAuth'),
  };
}
