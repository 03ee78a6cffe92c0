import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, test } from 'node:test';
import { SHIM_SOURCE } from '../../src/adapters/cni/shim-build.js';
import { answerVersion, buildResult, CniError, Code, containerDnsNames, parseCniArgs, parseConfig, parseEnv, requestedAddress, SUPPORTED_VERSIONS, validIfname, type Attached } from '../../src/adapters/cni/spec.js';

/** The CNI spec's parsing and result rules (src/adapters/cni/spec.ts): pure, no root, no agent. */

const throwsCode = (fn: () => unknown, code: number, re?: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CniError, `CniError expected, got ${e}`);
    assert.equal(e.code, code, `code ${code} expected: ${e.message}`);
    if (re) assert.match(e.message, re);
    return true;
  });

const addEnv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc123', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' };

describe('CNI env (code 4)', () => {
  test('ADD needs container id, netns and ifname; DEL does without netns; GC/STATUS/VERSION need none', () => {
    assert.deepEqual(parseEnv(addEnv), { command: 'ADD', containerId: 'abc123', netns: '/run/netns/x', ifname: 'eth0', args: {} });
    for (const missing of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'] as const) {
      const env: Record<string, string> = { ...addEnv };
      delete env[missing];
      throwsCode(() => parseEnv(env), Code.InvalidEnv, new RegExp(missing));
    }
    assert.equal(parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'a', CNI_IFNAME: 'eth0' }).netns, undefined);
    for (const c of ['GC', 'STATUS', 'VERSION']) assert.equal(parseEnv({ CNI_COMMAND: c }).command, c);
  });
  test('unknown or missing command, bad id, bad ifname, relative netns', () => {
    throwsCode(() => parseEnv({}), Code.InvalidEnv, /CNI_COMMAND/);
    throwsCode(() => parseEnv({ CNI_COMMAND: 'add' }), Code.InvalidEnv, /CNI_COMMAND/);
    throwsCode(() => parseEnv({ ...addEnv, CNI_CONTAINERID: '../etc' }), Code.InvalidEnv, /CNI_CONTAINERID/);
    throwsCode(() => parseEnv({ ...addEnv, CNI_IFNAME: 'a/b' }), Code.InvalidEnv, /CNI_IFNAME/);
    throwsCode(() => parseEnv({ ...addEnv, CNI_IFNAME: 'x'.repeat(16) }), Code.InvalidEnv, /CNI_IFNAME/);
    throwsCode(() => parseEnv({ ...addEnv, CNI_NETNS: 'run/netns/x' }), Code.InvalidEnv, /CNI_NETNS/);
  });
  test('interface names as Linux takes them', () => {
    for (const ok of ['eth0', 'net1', 'x'.repeat(15), 'a-b_c.d']) assert.ok(validIfname(ok), ok);
    for (const bad of ['', '.', '..', 'a b', 'a:b', 'a/b', 'x'.repeat(16)]) assert.ok(!validIfname(bad), bad);
  });
  test('CNI_ARGS pairs and IP=', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;IP=10.5.1.9;K8S_POD_NAME=web'), { IgnoreUnknown: '1', IP: '10.5.1.9', K8S_POD_NAME: 'web' });
    assert.deepEqual(parseCniArgs(''), {});
    assert.deepEqual(parseCniArgs('A=b=c'), { A: 'b=c' });
    throwsCode(() => parseCniArgs('novalue'), Code.InvalidEnv, /CNI_ARGS/);
    throwsCode(() => parseCniArgs('=x'), Code.InvalidEnv, /CNI_ARGS/);
    throwsCode(() => parseCniArgs('IP=10.5.1.300'), Code.InvalidEnv, /IP=/);
  });
});

describe('CNI config (codes 6, 1, 7)', () => {
  const base = { cniVersion: '1.1.0', name: 'n1', type: 'weft-cni' };
  test('undecodable stdin is 6, wrong version 1, fields that do not fit 7 naming the field', () => {
    throwsCode(() => parseConfig('{"cniVersion":'), Code.Decode);
    throwsCode(() => parseConfig(''), Code.Decode);
    throwsCode(() => parseConfig('"a string"'), Code.Decode);
    throwsCode(() => parseConfig('null'), Code.Decode);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, cniVersion: '0.3.1' })), Code.IncompatibleVersion, /0\.3\.1/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, cniVersion: undefined })), Code.InvalidConfig, /cniVersion/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, name: '-bad' })), Code.InvalidConfig, /name/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, mtu: 20 })), Code.InvalidConfig, /mtu/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, agentSocket: 'rel.sock' })), Code.InvalidConfig, /agentSocket/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, ipMasq: 'yes' })), Code.InvalidConfig, /ipMasq/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, runtimeConfig: { mac: 'zz' } })), Code.InvalidConfig, /runtimeConfig\.mac/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, runtimeConfig: { ips: ['10.0.0.1', '10.0.0.2'] } })), Code.InvalidConfig, /runtimeConfig\.ips/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, prevResult: { ips: [{ address: 7 }] } })), Code.InvalidConfig, /prevResult\.ips\.0\.address/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, 'cni.dev/valid-attachments': [{ containerID: 'a' }] })), Code.InvalidConfig, /valid-attachments/);
  });
  test('every supported version parses; unknown fields (plugin-specific, args, capabilities) pass', () => {
    for (const v of SUPPORTED_VERSIONS) assert.equal(parseConfig(JSON.stringify({ ...base, cniVersion: v })).cniVersion, v);
    const cfg = parseConfig(JSON.stringify({ ...base, args: { labels: { a: 1 } }, capabilities: { portMappings: true }, whatever: [1] }));
    assert.deepEqual((cfg as Record<string, unknown>).capabilities, { portMappings: true });
  });
  test('the address asked for: CNI_ARGS IP= before runtimeConfig.ips', () => {
    const cfg = parseConfig(JSON.stringify({ ...base, runtimeConfig: { ips: ['10.5.1.7/24'] } }));
    assert.equal(requestedAddress(parseEnv({ ...addEnv, CNI_ARGS: 'IP=10.5.1.8' }), cfg), '10.5.1.8');
    assert.equal(requestedAddress(parseEnv(addEnv), cfg), '10.5.1.7/24');
    assert.equal(requestedAddress(parseEnv(addEnv), parseConfig(JSON.stringify(base))), undefined);
  });
  test('DNS names: K8S_POD_NAME (podman passes the container name there) and runtimeConfig.aliases under this network', () => {
    const base = { cniVersion: '1.0.0', name: 'weftnet', type: 'weft-cni' };
    const env = parseEnv({ ...addEnv, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=my_web.1' });
    // podman: CapabilityArgs["aliases"] = {networkName: --network-alias values}, passed for a declared capability
    const cfg = parseConfig(JSON.stringify({ ...base, runtimeConfig: { aliases: { weftnet: ['www', 'WWW', 'my_web.1', 'api'], othernet: ['elsewhere'] } } }));
    assert.deepEqual(containerDnsNames(env, cfg), { name: 'my_web.1', aliases: ['www', 'WWW', 'api'] });
    // a pod name that cannot be a DNS name is not registered (the container still starts); no aliases: none
    assert.deepEqual(containerDnsNames(parseEnv({ ...addEnv, CNI_ARGS: 'K8S_POD_NAME=web-' }), parseConfig(JSON.stringify(base))), { aliases: [] });
    assert.deepEqual(containerDnsNames(parseEnv(addEnv), parseConfig(JSON.stringify(base))), { aliases: [] });
    // an alias the user asked for that is no DNS name: code 7 naming it
    throwsCode(() => parseConfig(JSON.stringify({ ...base, runtimeConfig: { aliases: { weftnet: ['ok', 'not ok'] } } })), Code.InvalidConfig, /runtimeConfig\.aliases\.weftnet\.1: not a DNS name/);
    throwsCode(() => parseConfig(JSON.stringify({ ...base, runtimeConfig: { aliases: ['www'] } })), Code.InvalidConfig, /runtimeConfig\.aliases/);
  });
  test('errors answer in the config version when weft speaks it', () => {
    assert.equal(answerVersion('{"cniVersion":"0.4.0"}'), '0.4.0');
    assert.equal(answerVersion('{"cniVersion":"0.2.0"}'), '1.1.0');
    assert.equal(answerVersion('garbage'), '1.1.0');
  });
});

describe('CNI result', () => {
  const a: Attached = { hostIf: 'vethwe1', ifname: 'eth0', mac: '02:42:0a:05:01:02', address: '10.5.1.2/24', gateway: '10.5.1.1', routeTo: 'default', mtu: 1450, sandbox: '/run/netns/c1' };
  test('1.x: host and container interfaces, ip pointing at the container one, default route, no ip version', () => {
    assert.deepEqual(buildResult('1.0.0', a), {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'vethwe1' }, { name: 'eth0', mac: a.mac, sandbox: a.sandbox }],
      ips: [{ address: a.address, gateway: a.gateway, interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: a.gateway }],
    });
    assert.equal(buildResult('1.1.0', a).interfaces![1]!.mtu, 1450, '1.1.0 interfaces carry the MTU');
  });
  test('0.4.0 ips carry version "4"; a second network routes only its CIDR; dns is passed through', () => {
    const r = buildResult('0.4.0', { ...a, ifname: 'net1', routeTo: '10.5.0.0/16' }, { nameservers: ['10.5.0.53'] });
    assert.equal(r.ips![0]!.version, '4');
    assert.deepEqual(r.routes, [{ dst: '10.5.0.0/16', gw: a.gateway }]);
    assert.deepEqual(r.dns, { nameservers: ['10.5.0.53'] });
  });
  test('chained after another plugin: its interfaces and ips come first and our indexes follow', () => {
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'other0' }, { name: 'net0', sandbox: '/run/netns/c1' }], ips: [{ address: '192.168.9.2/24', interface: 1 }], dns: { nameservers: ['1.1.1.1'] } };
    const r = buildResult('1.0.0', a, undefined, prev);
    assert.deepEqual(r.interfaces!.map((i) => i.name), ['other0', 'net0', 'vethwe1', 'eth0']);
    assert.deepEqual(r.ips!.map((i) => i.interface), [1, 3]);
    assert.deepEqual(r.dns, prev.dns, "the earlier plugin's dns stays when the config has none");
  });
});

test('the C shim answers VERSION with the same versions the agent accepts', () => {
  const src = fs.readFileSync(SHIM_SOURCE, 'utf8');
  const m = /#define SUPPORTED_VERSIONS "(.*)"/.exec(src);
  assert.ok(m, 'SUPPORTED_VERSIONS define in the shim');
  assert.deepEqual(JSON.parse(m[1]!.replace(/\\"/g, '"')), [...SUPPORTED_VERSIONS]);
});
