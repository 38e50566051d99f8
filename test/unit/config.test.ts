import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig, parseConfig } from '../../src/config/load-config.js';
import { loadSettings, repositoryUrl, repositoryUrls, resolveConnection, resolveSource, storageOptions, type GlobalOptions } from '../../src/config/settings.js';
import { PgkeepError, type ErrorCode } from '../../src/errors.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { describeConnection, libpqEnv, parseDatabaseUrl, type ConnectionInfo } from '../../src/postgres/connection-info.js';

const made: string[] = [];

after(async () => {
  await Promise.all(made.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

/** A fresh working folder holding `files` (relative path → content). */
async function workdir(files: Record<string, string> = {}): Promise<string> {
  const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-config-'));
  made.push(dir);
  for (const [name, content] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fs.writeFile(path.join(dir, name), content);
  }
  return dir;
}

function pgkeepError(code: ErrorCode, ...fragments: (string | RegExp)[]): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    for (const fragment of fragments) {
      if (typeof fragment === 'string') assert.ok(error.message.includes(fragment), `"${error.message}" should mention ${fragment}`);
      else assert.match(error.message, fragment);
    }
    return true;
  };
}

async function settingsIn(files: Record<string, string>, env: Record<string, string> = {}, options: GlobalOptions = {}) {
  const cwd = await workdir(files);
  return { cwd, settings: loadSettings(options, { env, cwd }) };
}

describe('parseConfig', () => {
  const valid = `
repo: ./repo
pgBin: /usr/lib/postgresql/17/bin
backup:
  format: custom
  jobs: 4
  compressLevel: 5
  excludeTables: [public.logs]
sources:
  app:
    db: postgresql://app@db1:5432/app
    backup:
      format: directory
      labels: [nightly]
  billing:
    host: db2
    port: 6432
    database: billing
    sslmode: require
`;

  it('accepts a valid file and returns typed values', () => {
    const config = parseConfig(valid, 'pgkeep.yaml', {});
    assert.equal(config.repo, './repo');
    assert.equal(config.backup?.jobs, 4);
    assert.deepEqual(config.backup?.excludeTables, ['public.logs']);
    assert.equal(config.sources?.app?.backup?.format, 'directory');
    assert.deepEqual(config.sources?.app?.backup?.labels, ['nightly']);
    assert.equal(config.sources?.billing?.port, 6432);
    assert.deepEqual(Object.keys(config.sources ?? {}), ['app', 'billing']);
  });

  it('an empty file is an empty config', () => {
    assert.deepEqual(parseConfig('', 'pgkeep.yaml', {}), {});
    assert.deepEqual(parseConfig('# only a comment\n', 'pgkeep.yaml', {}), {});
  });

  it('an unknown key is named with its path', () => {
    assert.throws(
      () => parseConfig('sources:\n  app:\n    backup:\n      fromat: custom\n', 'pgkeep.yaml', {}),
      pgkeepError('CONFIG_INVALID', 'pgkeep.yaml', 'sources.app.backup', '"fromat"'),
    );
    assert.throws(() => parseConfig('repos: ./x\n', 'my.yaml', {}), pgkeepError('CONFIG_INVALID', 'my.yaml', '"repos"'));
  });

  it('a bad enum value names sources.app.backup.format', () => {
    assert.throws(
      () => parseConfig('sources:\n  app:\n    backup:\n      format: tar\n', 'pgkeep.yaml', {}),
      pgkeepError('CONFIG_INVALID', 'sources.app.backup.format'),
    );
  });

  it('wrong types and out-of-range numbers are rejected with their path', () => {
    assert.throws(() => parseConfig('backup:\n  jobs: 0\n', 'pgkeep.yaml', {}), pgkeepError('CONFIG_INVALID', 'backup.jobs'));
    assert.throws(() => parseConfig('sources:\n  app:\n    port: 70000\n', 'pgkeep.yaml', {}), pgkeepError('CONFIG_INVALID', 'sources.app.port'));
    assert.throws(() => parseConfig('sources:\n  "bad/name":\n    host: x\n', 'pgkeep.yaml', {}), pgkeepError('CONFIG_INVALID'));
  });

  it('expands ${VAR} and ${VAR:-default} in string values', () => {
    const text = 'repo: ${REPO_ROOT}/pg\nsources:\n  app:\n    db: postgresql://${DB_USER:-app}:${DB_PASS}@${DB_HOST:-localhost}/app\n';
    const config = parseConfig(text, 'pgkeep.yaml', { REPO_ROOT: '/srv/backups', DB_PASS: 's3cret', DB_HOST: 'db.internal' });
    assert.equal(config.repo, '/srv/backups/pg');
    assert.equal(config.sources?.app?.db, 'postgresql://app:s3cret@db.internal/app');
  });

  it('an empty variable takes the default, like the shell :- form', () => {
    const config = parseConfig('repo: ${REPO:-/default/repo}\n', 'pgkeep.yaml', { REPO: '' });
    assert.equal(config.repo, '/default/repo');
  });

  it('expansion also reaches values inside lists', () => {
    const config = parseConfig('backup:\n  tables: ["${SCHEMA:-public}.users"]\n', 'pgkeep.yaml', { SCHEMA: 'app' });
    assert.deepEqual(config.backup?.tables, ['app.users']);
  });

  it('a missing variable is an error naming the variable and where it is used', () => {
    assert.throws(
      () => parseConfig('sources:\n  app:\n    password: ${APP_DB_PASSWORD}\n', 'pgkeep.yaml', {}),
      pgkeepError('CONFIG_INVALID', 'APP_DB_PASSWORD', 'sources.app.password'),
    );
  });

  it('invalid YAML is a one-line CONFIG_INVALID error naming the file', () => {
    for (const text of ['repo: [unclosed\n', 'a: b: c\n', 'sources:\n  app:\n   host: x\n  - y\n']) {
      assert.throws(
        () => parseConfig(text, 'broken.yaml', {}),
        (error: unknown) => {
          pgkeepError('CONFIG_INVALID', 'broken.yaml', /YAML/)(error);
          assert.ok(!(error as Error).message.includes('\n'), `one line: ${JSON.stringify((error as Error).message)}`);
          return true;
        },
      );
    }
  });
});

describe('loadConfig', () => {
  it('finds pgkeep.yaml, or pgkeep.yml, in the working folder; none is an empty config', async () => {
    const yaml = await workdir({ 'pgkeep.yaml': 'repo: /a\n' });
    assert.equal(loadConfig(undefined, {}, yaml).config.repo, '/a');
    assert.equal(loadConfig(undefined, {}, yaml).path, path.join(yaml, 'pgkeep.yaml'));
    const yml = await workdir({ 'pgkeep.yml': 'repo: /b\n' });
    assert.equal(loadConfig(undefined, {}, yml).config.repo, '/b');
    const none = await workdir();
    const empty = loadConfig(undefined, {}, none);
    assert.equal(empty.path, undefined);
    assert.deepEqual(empty.config, {});
  });

  it('--config beats PGKEEP_CONFIG beats the working folder', async () => {
    const cwd = await workdir({ 'pgkeep.yaml': 'repo: /cwd\n', 'env.yaml': 'repo: /env\n', 'flag.yaml': 'repo: /flag\n' });
    assert.equal(loadConfig('flag.yaml', { PGKEEP_CONFIG: 'env.yaml' }, cwd).config.repo, '/flag');
    assert.equal(loadConfig(undefined, { PGKEEP_CONFIG: 'env.yaml' }, cwd).config.repo, '/env');
  });

  it('a named config file that does not exist is CONFIG_NOT_FOUND', async () => {
    const cwd = await workdir();
    assert.throws(() => loadConfig('missing.yaml', {}, cwd), pgkeepError('CONFIG_NOT_FOUND', 'missing.yaml'));
    assert.throws(() => loadConfig(undefined, { PGKEEP_CONFIG: 'gone.yaml' }, cwd), pgkeepError('CONFIG_NOT_FOUND', 'gone.yaml'));
  });

  it('errors name the config file', async () => {
    const cwd = await workdir({ 'pgkeep.yaml': 'backup:\n  format: zip\n' });
    assert.throws(() => loadConfig(undefined, {}, cwd), pgkeepError('CONFIG_INVALID', 'pgkeep.yaml', 'backup.format'));
  });
});

describe('loadSettings', () => {
  it('the settings and the whole config are frozen', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': 'backup:\n  tables: [a]\nsources:\n  app:\n    host: h\n    backup:\n      labels: [x]\n' });
    assert.ok(Object.isFrozen(settings));
    assert.ok(Object.isFrozen(settings.config));
    assert.ok(Object.isFrozen(settings.config.sources));
    assert.ok(Object.isFrozen(settings.config.sources?.app));
    assert.ok(Object.isFrozen(settings.config.sources?.app?.backup?.labels));
    assert.ok(Object.isFrozen(settings.config.backup?.tables));
    assert.ok(Object.isFrozen(settings.env));
    assert.ok(Object.isFrozen(settings.options));
    assert.throws(() => {
      (settings.config.sources!.app as { host?: string }).host = 'changed';
    }, TypeError);
    assert.equal(settings.config.sources?.app?.host, 'h');
  });

  it('copies the options, so later changes to the caller object do not leak in', async () => {
    const options: GlobalOptions = { repo: '/first' };
    const cwd = await workdir();
    const settings = loadSettings(options, { env: {}, cwd });
    options.repo = '/second';
    assert.equal(repositoryUrl(settings), '/first');
  });

  it('reads a .env file in the working folder, but the real environment wins', async () => {
    const { settings } = await settingsIn(
      { '.env': 'PGHOST=from-dotenv\nPGPORT=6543\nPGUSER=dotenv_user\n' },
      { PGHOST: 'from-env' },
    );
    assert.equal(settings.env.PGHOST, 'from-env');
    assert.equal(settings.env.PGPORT, '6543');
    const connection = resolveConnection(settings, undefined);
    assert.equal(connection.host, 'from-env');
    assert.equal(connection.port, 6543);
    assert.equal(connection.user, 'dotenv_user');
  });

  it('a .env file can point at the config file', async () => {
    const { settings } = await settingsIn({ '.env': 'PGKEEP_CONFIG=conf/custom.yaml\n', 'conf/custom.yaml': 'repo: ./r\n' });
    assert.equal(settings.configFile !== undefined && path.basename(settings.configFile), 'custom.yaml');
  });
});

describe('resolveConnection precedence', () => {
  const PG = { PGHOST: 'pg-host', PGPORT: '5001', PGUSER: 'pg_user', PGPASSWORD: 'pg_pass', PGDATABASE: 'pg_db' };
  const POSTGRES = { POSTGRES_HOST: 'postgres-host', POSTGRES_PORT: '5002', POSTGRES_USER: 'postgres_user', POSTGRES_PASSWORD: 'postgres_pass', POSTGRES_DB: 'postgres_db' };
  const DATABASE_URL = 'postgresql://url_user:url_pass@url-host:5003/url_db';
  const configFile = 'sources:\n  app:\n    db: postgresql://cfg_user:cfg_pass@cfg-host:5004/cfg_db\n';

  function pick(c: ConnectionInfo) {
    return { host: c.host, port: c.port, user: c.user, password: c.password, database: c.database };
  }

  it('defaults: localhost, 5432, the OS user, and a database named after the user', async () => {
    const { settings } = await settingsIn({});
    const c = resolveConnection(settings, undefined);
    assert.equal(c.host, 'localhost');
    assert.equal(c.port, 5432);
    assert.equal(c.user, userInfo().username);
    assert.equal(c.database, c.user);
    assert.equal(c.password, undefined);
  });

  it('PG* variables are used when nothing else is set', async () => {
    const { settings } = await settingsIn({}, PG);
    assert.deepEqual(pick(resolveConnection(settings, undefined)), { host: 'pg-host', port: 5001, user: 'pg_user', password: 'pg_pass', database: 'pg_db' });
  });

  it('POSTGRES_* beats PG*', async () => {
    const { settings } = await settingsIn({}, { ...PG, ...POSTGRES });
    assert.deepEqual(pick(resolveConnection(settings, undefined)), {
      host: 'postgres-host',
      port: 5002,
      user: 'postgres_user',
      password: 'postgres_pass',
      database: 'postgres_db',
    });
  });

  it('DATABASE_URL beats POSTGRES_* and PG*', async () => {
    const { settings } = await settingsIn({}, { ...PG, ...POSTGRES, DATABASE_URL });
    assert.deepEqual(pick(resolveConnection(settings, undefined)), { host: 'url-host', port: 5003, user: 'url_user', password: 'url_pass', database: 'url_db' });
  });

  it('a config source beats DATABASE_URL and the environment', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': configFile }, { ...PG, ...POSTGRES, DATABASE_URL });
    assert.deepEqual(pick(resolveSource(settings).connection), { host: 'cfg-host', port: 5004, user: 'cfg_user', password: 'cfg_pass', database: 'cfg_db' });
  });

  it('--db beats the config source', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': configFile }, { ...PG, DATABASE_URL }, { db: 'postgresql://flag_user:flag_pass@flag-host:5005/flag_db' });
    assert.deepEqual(pick(resolveSource(settings).connection), { host: 'flag-host', port: 5005, user: 'flag_user', password: 'flag_pass', database: 'flag_db' });
  });

  it('layers merge field by field: what a higher layer leaves out comes from a lower one', async () => {
    const { settings } = await settingsIn({}, { PGPORT: '5001', PGPASSWORD: 'pg_pass', POSTGRES_USER: 'postgres_user', DATABASE_URL: 'postgresql://url-host/url_db' });
    assert.deepEqual(pick(resolveConnection(settings, undefined)), { host: 'url-host', port: 5001, user: 'postgres_user', password: 'pg_pass', database: 'url_db' });
  });

  it("a source's own fields override its db URL", async () => {
    const { settings } = await settingsIn({
      'pgkeep.yaml': 'sources:\n  app:\n    db: postgresql://u:p@url-host:5004/url_db\n    host: field-host\n    database: field_db\n    sslmode: verify-full\n',
    });
    const c = resolveSource(settings).connection;
    assert.equal(c.host, 'field-host');
    assert.equal(c.database, 'field_db');
    assert.equal(c.port, 5004);
    assert.equal(c.user, 'u');
    assert.equal(c.sslmode, 'verify-full');
  });

  it('passwordFile is read relative to the config file, without its trailing newline', async () => {
    const cwd = await workdir({
      'conf/pgkeep.yaml': 'sources:\n  app:\n    host: h\n    passwordFile: secrets/app.pw\n',
      'conf/secrets/app.pw': 'pa ss\n',
    });
    const settings = loadSettings({ config: 'conf/pgkeep.yaml' }, { env: {}, cwd });
    assert.equal(resolveSource(settings).connection.password, 'pa ss');
  });

  it('a bad port in the environment is CONFIG_INVALID naming the variable', async () => {
    const { settings } = await settingsIn({}, { PGPORT: 'abc' });
    assert.throws(() => resolveConnection(settings, undefined), pgkeepError('CONFIG_INVALID', 'PGPORT'));
  });
});

describe('repositoryUrl precedence', () => {
  const config = 'repo: ./config-repo\nsources:\n  app:\n    host: h\n    repo: ./source-repo\n  other:\n    host: h\n';

  async function setup(env: Record<string, string>, options: GlobalOptions = {}) {
    const cwd = await workdir({ 'conf/pgkeep.yaml': config });
    const settings = loadSettings({ config: 'conf/pgkeep.yaml', ...options }, { env, cwd });
    return { cwd, settings };
  }

  it('--repo beats PGKEEP_REPO, BACKUP_DIR and the config', async () => {
    const { cwd, settings } = await setup({ PGKEEP_REPO: '/env/pgkeep', BACKUP_DIR: '/env/backup' }, { repo: 'flag-repo' });
    assert.equal(repositoryUrl(settings, 'app'), path.join(cwd, 'flag-repo'));
  });

  it('PGKEEP_REPO beats BACKUP_DIR', async () => {
    const { settings } = await setup({ PGKEEP_REPO: '/env/pgkeep', BACKUP_DIR: '/env/backup' });
    assert.equal(repositoryUrl(settings, 'app'), '/env/pgkeep');
  });

  it('BACKUP_DIR beats the config', async () => {
    const { cwd, settings } = await setup({ BACKUP_DIR: 'rel/backup' });
    assert.equal(repositoryUrl(settings, 'app'), path.join(cwd, 'rel/backup'), 'relative to the working folder');
  });

  it("a source's repo beats the config's repo; both resolve relative to the config file's folder", async () => {
    const { cwd, settings } = await setup({});
    assert.equal(repositoryUrl(settings, 'app'), path.join(cwd, 'conf', 'source-repo'));
    assert.equal(repositoryUrl(settings, 'other'), path.join(cwd, 'conf', 'config-repo'));
    assert.equal(repositoryUrl(settings), path.join(cwd, 'conf', 'config-repo'));
  });

  it('without any setting it is <cwd>/backups', async () => {
    const cwd = await workdir();
    const settings = loadSettings({}, { env: {}, cwd });
    assert.equal(repositoryUrl(settings), path.join(cwd, 'backups'));
  });

  it('URLs are kept as they are; file:// is a local path', async () => {
    const { settings } = await setup({ PGKEEP_REPO: 's3://bucket/prefix' });
    assert.equal(repositoryUrl(settings, 'app'), 's3://bucket/prefix');
    const local = await setup({ PGKEEP_REPO: 'file:///srv/pgkeep' });
    assert.equal(openStorage(repositoryUrl(local.settings, 'app')).location, '/srv/pgkeep');
  });

  it('resolveSource carries the repository of the chosen source', async () => {
    const { cwd, settings } = await setup({}, { source: 'app' });
    assert.equal(resolveSource(settings).repo, path.join(cwd, 'conf', 'source-repo'));
  });
});

describe('per-repository S3 options', () => {
  const config = [
    's3:',
    '  region: eu-west-1',
    '  storageClass: STANDARD',
    'tempDir: ./tmp',
    'sources:',
    '  app:',
    '    host: h',
    '    repos:',
    '      - ./local',
    '      - url: s3://offsite/app',
    '        s3:',
    '          storageClass: STANDARD_IA',
    '          sse: aws:kms',
    '          kmsKeyId: alias/backups',
    '      - url: s3://r2/app',
    '        s3: { endpoint: "https://acct.r2.cloudflarestorage.com", partSizeMiB: 64 }',
    '',
  ].join('\n');

  it("a repos entry's s3 options override the config's s3 defaults for that repository only", async () => {
    const cwd = await workdir({ 'pgkeep.yaml': config });
    const settings = loadSettings({}, { env: {}, cwd });
    assert.deepEqual(repositoryUrls(settings, 'app'), [path.join(cwd, 'local'), 's3://offsite/app', 's3://r2/app']);
    const spoolDir = path.join(cwd, 'tmp');
    assert.deepEqual(storageOptions(settings, 's3://offsite/app').s3, { region: 'eu-west-1', storageClass: 'STANDARD_IA', sse: 'aws:kms', kmsKeyId: 'alias/backups', spoolDir });
    assert.deepEqual(storageOptions(settings, 's3://r2/app').s3, {
      endpoint: 'https://acct.r2.cloudflarestorage.com',
      region: 'eu-west-1',
      storageClass: 'STANDARD',
      partSize: 64 * 1024 * 1024,
      spoolDir,
    });
    assert.deepEqual(storageOptions(settings, 's3://elsewhere/x').s3, { region: 'eu-west-1', storageClass: 'STANDARD', spoolDir }, 'other URLs get the defaults');
  });

  it('network timeouts: durations per repository, over the top-level defaults; a bad one is named', async () => {
    const cwd = await workdir({
      'pgkeep.yaml': 's3:\n  idleTimeout: 30s\n  retryBudget: 5m\nrepos:\n  - url: s3://far/app\n    s3: { idleTimeout: 0.5s, connectTimeout: 3s, requestTimeout: 20m, maxAttempts: 9 }\n  - s3://near/app\n',
    });
    const settings = loadSettings({}, { env: {}, cwd });
    const far = storageOptions(settings, 's3://far/app').s3!;
    assert.deepEqual(
      { connect: far.connectionTimeoutMs, idle: far.idleTimeoutMs, request: far.requestTimeoutMs, budget: far.retryBudgetMs, attempts: far.maxAttempts },
      { connect: 3000, idle: 500, request: 1_200_000, budget: 300_000, attempts: 9 },
    );
    assert.equal(storageOptions(settings, 's3://near/app').s3!.idleTimeoutMs, 30_000);
    const bad = await workdir({ 'pgkeep.yaml': 's3:\n  idleTimeout: soon\n' });
    assert.throws(() => loadSettings({}, { env: {}, cwd: bad }), pgkeepError('CONFIG_INVALID', 's3.idleTimeout'));
  });

  it('a bad option in a repos entry is named with its path', async () => {
    const cwd = await workdir({ 'pgkeep.yaml': 'sources:\n  app:\n    repos:\n      - url: s3://b/p\n        s3: { sse: rot13 }\n' });
    assert.throws(() => loadSettings({}, { env: {}, cwd }), pgkeepError('CONFIG_INVALID', 'sources.app.repos.0'));
  });
});

describe('resolveSource', () => {
  const two = 'sources:\n  app:\n    host: a\n  billing:\n    host: b\n';

  it('several sources and no --source: SOURCE_UNKNOWN listing them', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': two });
    assert.throws(() => resolveSource(settings), pgkeepError('SOURCE_UNKNOWN', 'app', 'billing', '--source'));
  });

  it('an unknown --source: SOURCE_UNKNOWN naming the known sources', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': two }, {}, { source: 'payments' });
    assert.throws(() => resolveSource(settings), pgkeepError('SOURCE_UNKNOWN', 'payments', 'app', 'billing'));
  });

  it('--source picks one of several', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': two }, {}, { source: 'billing' });
    const source = resolveSource(settings);
    assert.equal(source.name, 'billing');
    assert.equal(source.connection.host, 'b');
  });

  it('the only configured source is chosen without --source', async () => {
    const { settings } = await settingsIn({ 'pgkeep.yaml': 'sources:\n  solo:\n    host: s\n' });
    assert.equal(resolveSource(settings).name, 'solo');
    assert.equal(resolveSource(settings).connection.host, 's');
  });

  it('zero-config: the source is named after the database, with unsafe characters replaced', async () => {
    const { settings } = await settingsIn({}, { DATABASE_URL: 'postgresql://u@h/shop%20db' });
    const source = resolveSource(settings);
    assert.equal(source.connection.database, 'shop db');
    assert.equal(source.name, 'shop_db');
  });

  it('an unsafe --source name is INVALID_NAME', async () => {
    const { settings } = await settingsIn({}, {}, { source: '../escape' });
    assert.throws(() => resolveSource(settings), pgkeepError('INVALID_NAME'));
  });

  it("backup options: the source's override the config's, key by key", async () => {
    const { settings } = await settingsIn({
      'pgkeep.yaml': 'backup:\n  format: custom\n  jobs: 2\n  noOwner: true\nsources:\n  app:\n    host: h\n    backup:\n      format: directory\n',
    });
    const source = resolveSource(settings);
    assert.deepEqual({ ...source.backup }, { format: 'directory', jobs: 2, noOwner: true });
    assert.ok(Object.isFrozen(source));
    assert.ok(Object.isFrozen(source.connection));
    assert.ok(Object.isFrozen(source.backup));
  });

  it('pgBin and tempDir: the environment wins, config paths resolve relative to the config file', async () => {
    const cwd = await workdir({ 'conf/pgkeep.yaml': 'pgBin: bin\ntempDir: /scratch\nsources:\n  app:\n    host: h\n' });
    const fromConfig = resolveSource(loadSettings({ config: 'conf/pgkeep.yaml' }, { env: {}, cwd }));
    assert.equal(fromConfig.pgBin, path.join(cwd, 'conf', 'bin'));
    assert.equal(fromConfig.tempDir, '/scratch');
    const fromEnv = resolveSource(loadSettings({ config: 'conf/pgkeep.yaml' }, { env: { PG_BIN: '/opt/pg/bin', PGKEEP_TEMP_DIR: '/t' }, cwd }));
    assert.equal(fromEnv.pgBin, '/opt/pg/bin');
    assert.equal(fromEnv.tempDir, '/t');
  });
});

describe('connection-info', () => {
  it('parseDatabaseUrl decodes a percent-encoded password, user and database', () => {
    const info = parseDatabaseUrl('postgresql://us%40er:p%40ss%3Aw%2Fd%25x@db.example.com:6543/my%20db');
    assert.equal(info.user, 'us@er');
    assert.equal(info.password, 'p@ss:w/d%x');
    assert.equal(info.host, 'db.example.com');
    assert.equal(info.port, 6543);
    assert.equal(info.database, 'my db');
  });

  it('parseDatabaseUrl only returns the parts that are present', () => {
    assert.deepEqual(parseDatabaseUrl('postgres://db.example.com'), { host: 'db.example.com' });
    assert.deepEqual(parseDatabaseUrl('postgresql:///appdb'), { database: 'appdb' });
  });

  it('parseDatabaseUrl takes a Unix socket folder from ?host= or a percent-encoded host', () => {
    const query = parseDatabaseUrl('postgresql:///appdb?host=/var/run/postgresql&port=5433');
    assert.equal(query.host, '/var/run/postgresql');
    assert.equal(query.port, 5433);
    assert.equal(query.database, 'appdb');
    const encoded = parseDatabaseUrl('postgresql://%2Ftmp%2Fpg/appdb');
    assert.equal(encoded.host, '/tmp/pg');
  });

  it('parseDatabaseUrl reads ?sslmode= and keeps other libpq parameters', () => {
    const info = parseDatabaseUrl('postgresql://u@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=nightly');
    assert.equal(info.sslmode, 'verify-full');
    assert.deepEqual({ ...info.params }, { sslrootcert: '/etc/ca.pem', application_name: 'nightly' });
  });

  it('parseDatabaseUrl takes user, password and dbname from the query when the URL has none', () => {
    const info = parseDatabaseUrl('postgresql://h/?user=qu&password=qp&dbname=qd');
    assert.equal(info.user, 'qu');
    assert.equal(info.password, 'qp');
    assert.equal(info.database, 'qd');
    assert.equal(info.params, undefined);
  });

  it('parseDatabaseUrl unwraps IPv6 hosts', () => {
    assert.equal(parseDatabaseUrl('postgresql://[::1]:5433/d').host, '::1');
  });

  it('parseDatabaseUrl rejects other schemes, bad ports and non-URLs with CONFIG_INVALID', () => {
    assert.throws(() => parseDatabaseUrl('mysql://u@h/d', 'DATABASE_URL'), pgkeepError('CONFIG_INVALID', 'DATABASE_URL', 'postgresql://'));
    assert.throws(() => parseDatabaseUrl('not a url', '--db'), pgkeepError('CONFIG_INVALID', '--db'));
    assert.throws(() => parseDatabaseUrl('postgresql://h/d?port=99999', '--db'), pgkeepError('CONFIG_INVALID', '99999'));
  });

  it('a malformed URL error does not echo the password', () => {
    assert.throws(
      () => parseDatabaseUrl('postgresql://u:TopSecret@h:notaport/d', '--db'),
      (error: unknown) => {
        assert.ok(error instanceof PgkeepError);
        assert.ok(!error.message.includes('TopSecret'), error.message);
        return true;
      },
    );
  });

  const secret = 'S3cr3t p@ss/word';
  const info: ConnectionInfo = { host: 'db.example.com', port: 5433, user: 'app', database: 'shop', password: secret, sslmode: 'require' };

  it('describeConnection shows user, host, port and database, never the password', () => {
    const text = describeConnection(info);
    assert.equal(text, 'postgresql://app@db.example.com:5433/shop?sslmode=require');
    for (const form of [secret, encodeURIComponent(secret), 'S3cr3t']) assert.ok(!text.includes(form));
    const socket = describeConnection({ ...info, host: '/var/run/postgresql' }, 'other');
    assert.ok(socket.includes('/other'));
    assert.ok(socket.includes(encodeURIComponent('/var/run/postgresql')));
    assert.ok(!socket.includes('S3cr3t'));
    assert.ok(describeConnection({ ...info, host: '::1' }).includes('[::1]:5433'));
  });

  it('libpqEnv passes the password only as PGPASSWORD and drops inherited PG* variables', () => {
    const base = { PATH: '/usr/bin', HOME: '/root', PGHOST: 'evil', PGPASSWORD: 'inherited', PGSERVICE: 'svc', PGSSLMODE: 'disable', PGOPTIONS: '-c x=y', PGAPPNAME: 'other' };
    const env = libpqEnv(info, base);
    assert.equal(env.PGPASSWORD, secret);
    assert.equal(env.PGHOST, 'db.example.com');
    assert.equal(env.PGPORT, '5433');
    assert.equal(env.PGUSER, 'app');
    assert.equal(env.PGDATABASE, 'shop');
    assert.equal(env.PGSSLMODE, 'require');
    assert.equal(env.PGSERVICE, undefined);
    assert.equal(env.PGOPTIONS, undefined);
    assert.equal(env.PGAPPNAME, 'pgkeep');
    assert.equal(env.PATH, '/usr/bin');
    assert.equal(env.HOME, '/root');
    // the password appears nowhere but PGPASSWORD
    for (const [key, value] of Object.entries(env)) {
      if (key !== 'PGPASSWORD') assert.ok(!String(value).includes('S3cr3t'), `${key} leaks the password`);
    }
  });

  it('libpqEnv without a password drops an inherited PGPASSWORD', () => {
    const { password: _password, ...noPassword } = info;
    const env = libpqEnv(noPassword, { PGPASSWORD: 'inherited', PGPASSFILE: '/home/x/.pgpass' });
    assert.equal(env.PGPASSWORD, undefined);
    assert.equal(env.PGPASSFILE, undefined);
  });

  it('libpqEnv maps URL parameters to their libpq variables', () => {
    const env = libpqEnv({ ...info, params: { sslrootcert: '/etc/ca.pem', application_name: 'nightly', connect_timeout: '7', bogus: 'x' } }, {});
    assert.equal(env.PGSSLROOTCERT, '/etc/ca.pem');
    assert.equal(env.PGAPPNAME, 'nightly');
    assert.equal(env.PGCONNECT_TIMEOUT, '7');
    assert.ok(!Object.values(env).includes('x'));
  });
});
