import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load-config.js';
import { resolveNotifySettings, resolveServeSettings } from '../../src/config/serve-settings.js';
import type { Settings } from '../../src/config/settings.js';
import { isPgkeepError } from '../../src/errors.js';
import { loadRegistry } from '../../src/registry/registry.js';

/** The job kinds a schedule may name: those the commands declare. */
const kinds = (await loadRegistry()).jobKinds({ scheduled: true });

const docs = path.resolve(import.meta.dirname, '../../docs');

function settingsOf(config: Settings['config'], env: Record<string, string> = {}): Settings {
  return { cwd: '/work', configFile: '/etc/pgkeep/pgkeep.yaml', config, env, options: {} };
}

describe('serve configuration', () => {
  test('the sample pgkeep.yaml in docs/ is valid and sets every serve: and notify: key', () => {
    const env = { SLACK_WEBHOOK_URL: 'https://hooks.slack.com/services/T/B/x', ALERTS_TOKEN: 't', ANALYTICS_PASSWORD: 'p' };
    const config = parseConfig(readFileSync(path.join(docs, 'pgkeep.example.yaml'), 'utf8'), 'pgkeep.example.yaml', env);
    assert.deepEqual(Object.keys(config.serve!).sort(), ['allowedHosts', 'catchUp', 'concurrency', 'gracePeriod', 'historyLimit', 'host', 'overlap', 'port', 'protectProbes', 'pruneAfterBackup', 'stateDir', 'stuckAfter', 'timeZone', 'tokenFile', 'trustProxy'].sort());
    assert.deepEqual(Object.keys(config.sources!.app!.schedule!).sort(), ['check', 'logical', 'physical', 'pitrDrill', 'prune', 'restoreTest', 'timeZone']);
    const serve = resolveServeSettings(settingsOf({ ...config, serve: { ...config.serve, tokenFile: undefined } }), {}, kinds);
    assert.equal(serve.schedules.length, 7);
    assert.deepEqual(serve.schedules[0], { source: 'app', kind: 'logical', cron: '0 2 * * *', timeZone: 'Europe/Paris' });
    assert.equal(serve.schedules[6]!.timeZone, 'UTC', 'serve.timeZone is the default');
    assert.equal(serve.stuckAfterMs, 600_000);
  });

  test('defaults, and the environment over the file', () => {
    const plain = resolveServeSettings(settingsOf({}), {}, kinds);
    assert.equal(plain.host, '127.0.0.1');
    assert.equal(plain.port, 9187);
    assert.equal(plain.token, undefined);
    assert.equal(plain.overlap, 'queue');
    assert.equal(plain.graceMs, 60_000);
    assert.equal(plain.pruneAfterBackup, true);
    assert.equal(plain.stateDir, '/etc/pgkeep/pgkeep-state');
    const fromEnv = resolveServeSettings(settingsOf({ serve: { token: 'file-token' } }, { PGKEEP_API_TOKEN: 'env-token', PGKEEP_STATE_DIR: '/var/lib/pgkeep' }), {}, kinds);
    assert.equal(fromEnv.token, 'env-token');
    assert.equal(fromEnv.stateDir, '/var/lib/pgkeep');
    const notify = resolveNotifySettings(settingsOf({ notify: { email: { host: 'smtp', from: 'a@b.c', to: ['d@e.f'] } } }, { SMTP_PASSWORD: 'pw' }));
    assert.equal(notify.email!.password, 'pw');
    assert.equal(notify.reminderMs, 86_400_000);
  });

  test('serve.allowedHosts and serve.trustProxy: lists (or one string), each entry checked, the flags added', () => {
    const one = parseConfig('serve: { allowedHosts: backup.example.com, trustProxy: 10.0.0.2 }', 'pgkeep.yaml', {});
    assert.deepEqual(one.serve!.allowedHosts, ['backup.example.com']);
    assert.deepEqual(one.serve!.trustProxy, ['10.0.0.2']);
    const yaml = ['serve:', '  allowedHosts:', '    - backup.example.com', '    - "pgkeep.internal:8443"', '    - "*.svc.cluster.local"', '    - 10.0.0.0/8', '    - "[fd00::5]:9187"', '  trustProxy: [127.0.0.1, "::1", 10.0.0.0/8]', ''].join('\n');
    const config = parseConfig(yaml, 'pgkeep.yaml', {});
    assert.deepEqual(config.serve!.allowedHosts, ['backup.example.com', 'pgkeep.internal:8443', '*.svc.cluster.local', '10.0.0.0/8', '[fd00::5]:9187']);
    assert.deepEqual(config.serve!.trustProxy, ['127.0.0.1', '::1', '10.0.0.0/8']);
    const resolved = resolveServeSettings(settingsOf(config), { allowedHosts: ['dash.example.org'], trustProxy: ['192.0.2.1'] }, kinds);
    assert.deepEqual(resolved.allowedHosts, [...config.serve!.allowedHosts!, 'dash.example.org']);
    assert.deepEqual(resolved.trustProxy, ['127.0.0.1', '::1', '10.0.0.0/8', '192.0.2.1']);
    const plain = resolveServeSettings(settingsOf({}), {}, kinds);
    assert.deepEqual([plain.allowedHosts, plain.trustProxy], [[], []]);
    for (const [text, message] of [
      ['serve: { allowedHosts: ["https://backup.example.com"] }', /pgkeep\.yaml: serve\.allowedHosts\.0: "https:\/\/backup\.example\.com" is not a host name, name:port, \*\.domain, IP address or CIDR range/],
      ['serve: { allowedHosts: [ok.example, "bad host"] }', /serve\.allowedHosts\.1: "bad host" is not a host name/],
      ['serve: { allowedHosts: [10.0.0.0/33] }', /serve\.allowedHosts\.0: /],
      ['serve: { allowedHosts: [42] }', /serve\.allowedHosts\.0: /],
      ['serve: { trustProxy: [proxy.example.com] }', /serve\.trustProxy\.0: "proxy\.example\.com" is not an IP address or CIDR range \(a proxy is trusted by its address\)/],
      ['serve: { trustedProxies: [10.0.0.1] }', /serve: unknown key "trustedProxies"/],
    ] as const) {
      assert.throws(() => parseConfig(text, 'pgkeep.yaml', {}), (e: unknown) => isPgkeepError(e, 'CONFIG_INVALID') && message.test((e as Error).message), text);
    }
  });

  test('bad keys are named', () => {
    assert.throws(
      () => parseConfig('serve: { overlap: sometimes }', 'pgkeep.yaml', {}),
      (e: unknown) => isPgkeepError(e, 'CONFIG_INVALID') && /pgkeep\.yaml: serve\.overlap: /.test((e as Error).message),
    );
    // a schedule key is a job kind of the registry: checked where serve resolves its settings (config reads no one)
    const daily = parseConfig('sources: { app: { schedule: { daily: "0 2 * * *" } } }', 'pgkeep.yaml', {});
    assert.throws(
      () => resolveServeSettings(settingsOf(daily), {}, kinds),
      (e: unknown) => isPgkeepError(e, 'CONFIG_INVALID') && (e as Error).message === 'pgkeep.yaml: sources.app.schedule: unknown key "daily" (check the spelling)',
    );
    assert.throws(
      () => parseConfig('sources: { app: { schedule: { daily: 42 } } }', 'pgkeep.yaml', {}),
      (e: unknown) => isPgkeepError(e, 'CONFIG_INVALID') && /sources\.app\.schedule\.daily: /.test((e as Error).message),
    );
    assert.throws(
      () => parseConfig('notify: { webhooks: [{ url: "not a url" }] }', 'pgkeep.yaml', {}),
      (e: unknown) => isPgkeepError(e, 'CONFIG_INVALID') && /notify\.webhooks\.0\.url: a webhook needs an http\(s\) URL/.test((e as Error).message),
    );
  });
});
