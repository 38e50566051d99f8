import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { HostAllowlist, parseHostPattern, parseHostValue, parseProxyAddress, registerHostCheck, type RequestOrigin } from '../../src/server/host-allowlist.js';

// The rules alone (the integration test drives them over real HTTP through the CLI).
const PORT = 9187;
const origin = (host: string | undefined, extra: Partial<RequestOrigin> = {}): RequestOrigin => ({
  host,
  forwardedHost: undefined,
  localAddress: '127.0.0.1',
  localPort: PORT,
  remoteAddress: '127.0.0.1',
  ...extra,
});

describe('Host values and patterns', () => {
  test('Host header values', () => {
    assert.deepEqual(parseHostValue('LocalHost:9187'), { name: 'localhost', ip: 0, port: 9187 });
    assert.deepEqual(parseHostValue('backup.example.com.'), { name: 'backup.example.com', ip: 0, port: undefined });
    assert.deepEqual(parseHostValue('127.0.0.2:80'), { name: '127.0.0.2', ip: 4, port: 80 });
    assert.deepEqual(parseHostValue('[0:0:0:0:0:0:0:1]:9187'), { name: '::1', ip: 6, port: 9187 });
    assert.deepEqual(parseHostValue('[FD00::5]'), { name: 'fd00::5', ip: 6, port: undefined });
    for (const bad of ['', 'a b', '::1', '[::1', 'host:0', 'host:65536', 'host:12x', 'host:', 'a..b', '-a.b', 'évil.example', 'a/b', '[1.2.3.4]', 'user@host']) {
      assert.equal(parseHostValue(bad), undefined, bad);
    }
  });

  test('allowedHosts entries', () => {
    assert.deepEqual(parseHostPattern('Backup.Example.com'), { kind: 'name', name: 'backup.example.com', port: undefined });
    assert.deepEqual(parseHostPattern('backup.example.com:8443'), { kind: 'name', name: 'backup.example.com', port: 8443 });
    assert.deepEqual(parseHostPattern('*.svc.cluster.local'), { kind: 'suffix', suffix: 'svc.cluster.local', port: undefined });
    assert.deepEqual(parseHostPattern('*'), { kind: 'any' });
    for (const ip of ['10.0.0.5', '[fd00::5]:9187', 'fd00::5', '10.0.0.0/8', 'fd00::/8']) assert.equal((parseHostPattern(ip) as { kind: string }).kind, 'ip', ip);
    for (const bad of ['', 'a b', 'http://backup.example.com', 'backup.example.com/', '*.', '**.example.com', 'a.*.example.com', '10.0.0.0/33', 'fd00::/129', 'host:99999']) {
      assert.match(String(parseHostPattern(bad)), /is not a host name, name:port, \*\.domain, IP address or CIDR range/, bad);
    }
    assert.equal(typeof parseProxyAddress('10.0.0.1'), 'object');
    assert.equal(typeof parseProxyAddress('10.0.0.0/8'), 'object');
    assert.equal(typeof parseProxyAddress('::1'), 'object');
    for (const bad of ['proxy.example.com', '10.0.0.0/40', '*', '']) assert.match(String(parseProxyAddress(bad)), /is not an IP address or CIDR range/, bad);
  });
});

describe('HostAllowlist', () => {
  const loopbackOnly = new HostAllowlist({ listen: { host: '127.0.0.1', port: PORT } });

  test('loopback names and addresses on the listening port, or without a port', () => {
    for (const host of ['localhost:9187', '127.0.0.1:9187', '127.0.0.2:9187', '127.255.255.254:9187', '[::1]:9187', 'localhost', '127.0.0.1', '[::1]', 'localhost.:9187']) {
      assert.deepEqual(loopbackOnly.check(origin(host)), { ok: true }, host);
    }
    for (const host of ['localhost:9188', '127.0.0.1:80', 'evil.example:9187', 'evil.example', 'localhost.evil.example', '128.0.0.1:9187', '[::2]:9187', '0.0.0.0:9187', '10.0.0.5:9187']) {
      const verdict = loopbackOnly.check(origin(host));
      assert.equal(verdict.ok, false, host);
      assert.equal(!verdict.ok && verdict.status, 421, host);
    }
  });

  test('no Host, or a malformed one: 400', () => {
    assert.deepEqual(loopbackOnly.check(origin(undefined)), { ok: false, status: 400, reason: 'the request has no Host header' });
    assert.deepEqual(loopbackOnly.check(origin('  ')), { ok: false, status: 400, reason: 'the request has no Host header' });
    assert.deepEqual(loopbackOnly.check(origin('a b')), { ok: false, status: 400, reason: 'malformed Host header "a b"' });
    const long = loopbackOnly.check(origin(`${'a'.repeat(300)}.example`));
    assert.ok(!long.ok && long.reason.length < 260, 'a long Host is cut in the message');
  });

  test('a non-loopback bind: the listen address with its port, and the address the request arrived on', () => {
    const wildcard = new HostAllowlist({ listen: { host: '0.0.0.0', port: PORT } });
    assert.equal(wildcard.check(origin('0.0.0.0:9187')).ok, true);
    assert.equal(wildcard.check(origin('0.0.0.0:9188')).ok, false);
    // a kubelet probe: Host podIP:port on a connection to the pod IP (IPv4 on a dual-stack socket too)
    assert.equal(wildcard.check(origin('10.1.2.3:9187', { localAddress: '10.1.2.3' })).ok, true);
    assert.equal(wildcard.check(origin('10.1.2.3:9187', { localAddress: '::ffff:10.1.2.3' })).ok, true);
    assert.equal(wildcard.check(origin('10.1.2.3', { localAddress: '10.1.2.3' })).ok, true);
    assert.equal(wildcard.check(origin('[fd00::2]:9187', { localAddress: 'fd00:0::2' })).ok, true);
    assert.equal(wildcard.check(origin('10.1.2.3:9187', { localAddress: '10.1.2.4' })).ok, false, 'another address of the machine');
    assert.equal(wildcard.check(origin('10.1.2.3:1', { localAddress: '10.1.2.3' })).ok, false, 'another port');
    const lan = new HostAllowlist({ listen: { host: '192.168.1.5', port: PORT } });
    assert.equal(lan.check(origin('192.168.1.5:9187', { localAddress: '192.168.1.5' })).ok, true);
    assert.equal(lan.check(origin('evil.example:9187', { localAddress: '192.168.1.5' })).ok, false, 'a rebound name');
    const named = new HostAllowlist({ listen: { host: 'backup-host.lan', port: PORT } });
    assert.equal(named.check(origin('backup-host.lan:9187')).ok, true, 'the listen name, with the port');
    assert.equal(named.check(origin('backup-host.lan:80')).ok, false);
  });

  test('configured patterns', () => {
    const list = new HostAllowlist({
      listen: { host: '127.0.0.1', port: PORT },
      allowedHosts: ['backup.example.com', 'pgkeep.internal:8443', '*.svc.cluster.local', '10.0.0.0/8', '[fd00::9]'],
    });
    const allowed = ['backup.example.com', 'backup.example.com:443', 'BACKUP.example.com.:8080', 'pgkeep.internal:8443', 'a.svc.cluster.local', 'pgkeep.ns.svc.cluster.local:9187', '10.200.0.1:9187', '[fd00::9]:1'];
    for (const host of allowed) assert.equal(list.check(origin(host)).ok, true, host);
    const refused = ['pgkeep.internal', 'pgkeep.internal:9187', 'svc.cluster.local', 'evilsvc.cluster.local', 'backup.example.com.evil.example', 'xbackup.example.com', '11.0.0.1:9187', '[fd00::a]'];
    for (const host of refused) assert.equal(list.check(origin(host)).ok, false, host);
    const any = new HostAllowlist({ listen: { host: '127.0.0.1', port: PORT }, allowedHosts: ['*'] });
    assert.equal(any.check(origin('evil.example')).ok, true);
    assert.match(any.describe(PORT), /Host check off/);
    assert.throws(() => new HostAllowlist({ listen: { host: '127.0.0.1', port: PORT }, allowedHosts: ['a b'] }), /is not a host name/);
  });

  test('X-Forwarded-Host: ignored from an untrusted peer, checked (every value) from a trusted proxy', () => {
    const list = new HostAllowlist({ listen: { host: '127.0.0.1', port: PORT }, allowedHosts: ['backup.example.com'], trustProxy: ['10.0.0.2', 'fd00::/64'] });
    // untrusted: the Host decides, the header changes nothing either way
    assert.equal(list.check(origin('evil.example', { forwardedHost: 'localhost:9187' })).ok, false);
    assert.equal(list.check(origin('localhost:9187', { forwardedHost: 'evil.example' })).ok, true);
    // trusted: the Host and every forwarded value must be allowed
    const proxy = { remoteAddress: '10.0.0.2' };
    assert.equal(list.check(origin('127.0.0.1:9187', { ...proxy, forwardedHost: 'backup.example.com' })).ok, true);
    assert.equal(list.check(origin('127.0.0.1:9187', { remoteAddress: '::ffff:10.0.0.2', forwardedHost: 'backup.example.com:443' })).ok, true);
    assert.equal(list.check(origin('127.0.0.1:9187', { remoteAddress: 'fd00::1:2', forwardedHost: 'backup.example.com' })).ok, true);
    const evil = list.check(origin('127.0.0.1:9187', { ...proxy, forwardedHost: 'evil.example' }));
    assert.equal(!evil.ok && evil.status, 421);
    assert.match(!evil.ok ? evil.reason : '', /^X-Forwarded-Host "evil\.example" is not a name of this server/);
    assert.equal(list.check(origin('127.0.0.1:9187', { ...proxy, forwardedHost: 'backup.example.com, evil.example' })).ok, false);
    assert.equal(list.check(origin('evil.example', { ...proxy, forwardedHost: 'backup.example.com' })).ok, false, 'the Host is still checked');
    assert.equal(list.check(origin('127.0.0.1:9187', { ...proxy, forwardedHost: 'a b' })).ok, false);
    assert.equal(list.check(origin('127.0.0.1:9187', { remoteAddress: '10.0.0.3', forwardedHost: 'evil.example' })).ok, true, 'another peer is not the proxy');
  });

  test('the hook answers before any other hook or route, and reports each refusal once', async () => {
    const app = Fastify();
    const seen: string[] = [];
    const logged: string[] = [];
    registerHostCheck(app, loopbackOnly, (line) => logged.push(line));
    app.addHook('onRequest', async () => void seen.push('later hook'));
    app.get('/', async () => (seen.push('route'), 'page'));
    for (let i = 0; i < 3; i++) {
      const refused = await app.inject({ url: '/', headers: { host: 'evil.example' } });
      assert.equal(refused.statusCode, 421);
      assert.equal(refused.headers['content-type'], 'text/plain; charset=utf-8');
      assert.equal(refused.headers['cache-control'], 'no-store');
      assert.equal(refused.body, 'pgkeep: refused: Host "evil.example" is not a name of this server (DNS rebinding protection); if it is yours, add it to serve.allowedHosts\n');
    }
    assert.deepEqual(seen, []);
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /^refused a request from 127\.0\.0\.1: Host "evil\.example"/);
    const ok = await app.inject({ url: '/', headers: { host: 'localhost' } });
    assert.equal(ok.body, 'page');
    assert.deepEqual(seen, ['later hook', 'route']);
    await app.close();
  });
});
