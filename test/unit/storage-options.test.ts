import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadSettings, storageOptions } from '../../src/config/settings.js';
import { PgkeepError } from '../../src/errors.js';
import { openStorage, storageDriverName } from '../../src/storage/open-storage.js';

const made: string[] = [];
after(() => Promise.all(made.map((dir) => fs.rm(dir, { recursive: true, force: true }))));

async function workdir(config: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-storage-options-'));
  made.push(dir);
  await fs.writeFile(path.join(dir, 'pgkeep.yaml'), config);
  return dir;
}

describe('storage-driver options in the config', () => {
  it('storage.s3 (per-driver section) and the older top-level s3 give the same driver options', async () => {
    const section = 'storage:\n  s3: { region: eu-west-1, storageClass: STANDARD_IA, idleTimeout: 30s }\nrepos:\n  - url: s3://far/app\n    storage: { s3: { maxAttempts: 9 } }\n';
    const alias = 's3: { region: eu-west-1, storageClass: STANDARD_IA, idleTimeout: 30s }\nrepos:\n  - url: s3://far/app\n    s3: { maxAttempts: 9 }\n';
    const fromSection = loadSettings({}, { env: {}, cwd: await workdir(section) });
    const fromAlias = loadSettings({}, { env: {}, cwd: await workdir(alias) });
    const far = storageOptions(fromSection, 's3://far/app').s3!;
    assert.equal(far.region, 'eu-west-1');
    assert.equal(far.storageClass, 'STANDARD_IA');
    assert.equal(far.idleTimeoutMs, 30_000);
    assert.equal(far.maxAttempts, 9, "the repos entry's own section overrides the defaults");
    const { spoolDir: _a, ...a } = far;
    const { spoolDir: _b, ...b } = storageOptions(fromAlias, 's3://far/app').s3!;
    assert.deepEqual(a, b);
  });

  it('both spellings at once are refused with one clear line', async () => {
    const settings = loadSettings({}, { env: {}, cwd: await workdir('storage:\n  s3: { region: a }\ns3: { region: b }\n') });
    assert.throws(
      () => storageOptions(settings, 's3://x/y'),
      (error: unknown) => error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && /storage\.s3/.test(error.message),
    );
  });

  it('an unknown driver section is named', async () => {
    const cwd = await workdir('storage:\n  gcs: { bucket: x }\n');
    assert.throws(() => loadSettings({}, { env: {}, cwd }), (error: unknown) => error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && /storage/.test(error.message));
  });
});

describe('the storage-driver registry', () => {
  it('picks the driver by scheme; a relative path is resolved against posix.baseDir', () => {
    assert.equal(storageDriverName('/srv/backups'), 'posix');
    assert.equal(storageDriverName('file:///srv/backups'), 'posix');
    assert.equal(storageDriverName('S3://bucket/p'), 's3');
    assert.equal(openStorage('backups', { posix: { baseDir: '/srv' } }).location, '/srv/backups');
    assert.equal(openStorage('file:///srv/x').location, '/srv/x');
    assert.equal(openStorage('s3://bucket/p').location, 's3://bucket/p');
  });

  it('an unsupported scheme is one CONFIG_INVALID line naming only the scheme', () => {
    assert.throws(
      () => openStorage('gs://user:secret@bucket/x'),
      (error: unknown) => error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && /"gs:\/\/"/.test(error.message) && !error.message.includes('secret'),
    );
  });
});
