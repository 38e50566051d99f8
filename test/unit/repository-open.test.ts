import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgkeepError } from '../../src/errors.js';
import { Repository } from '../../src/repository/repository.js';
import { PosixStorage, TEMP_PREFIX } from '../../src/storage/posix-storage.js';

const work = await mkdtemp(path.join(tmpdir(), 'pgkeep-repository-open-'));
after(() => rm(work, { recursive: true, force: true }));

let made = 0;
/** A new, not yet existing location under the work folder. */
const fresh = () => path.join(work, `repo-${++made}`);

const isCode = (code: string) => (error: unknown) => error instanceof PgkeepError && error.code === code;

/**
 * Serve runs the first backups of several sources into one new repository at
 * once: each opens it with createIfEmpty, and the one that creates it writes
 * pgkeep.json (through a temp file, fsynced, then linked) and then its
 * backup's objects. Another opener that looked for pgkeep.json a moment
 * before must not take the location for someone else's (REPO_NOT_PGKEEP): that
 * failed a healthy source's first backup and paged "no backup" (serve-fleet).
 */
describe('Repository.open beside another process creating the repository', () => {
  it('a location holding only a pgkeep.json still being written (its temp file) is empty: a backup creates the repository, a reader finds none yet', async () => {
    const root = fresh();
    await mkdir(root);
    // what PosixStorage.putIfAbsent leaves while it writes and fsyncs, before the link() that makes pgkeep.json appear
    await writeFile(path.join(root, `${TEMP_PREFIX}pgkeep.json.0123456789ab`), '{"format": 2');
    await assert.rejects(Repository.open(new PosixStorage(root)), isCode('REPO_MISSING'), 'not there yet, and not someone else\'s');
    const created = await Repository.open(new PosixStorage(root), { createIfEmpty: true });
    assert.equal((await Repository.open(new PosixStorage(root))).info.id, created.info.id);
  });

  it('a repository created between the look for pgkeep.json and the look for other objects is opened, not called foreign', async () => {
    const root = fresh();
    let other: Repository | undefined;
    /** Storage whose first emptiness check comes after another process created the repository and began its backup. */
    class Racing extends PosixStorage {
      override async isEmpty(): Promise<boolean> {
        if (!other) {
          other = await Repository.init(new PosixStorage(root), null);
          await other.ensureSource('db01', 'db01');
        }
        return super.isEmpty();
      }
    }
    const opened = await Repository.open(new Racing(root), { createIfEmpty: true });
    assert.equal(opened.info.id, other!.info.id, 'the repository the other process created');
    other = undefined;
    const second = fresh();
    class RacingReader extends PosixStorage {
      override async isEmpty(): Promise<boolean> {
        if (!other) {
          other = await Repository.init(new PosixStorage(second), null);
          await other.ensureSource('db01', 'db01');
        }
        return super.isEmpty();
      }
    }
    assert.equal((await Repository.open(new RacingReader(second))).info.id, other!.info.id, 'a reader (serve\'s catalog) opens it too');
  });

  it('eight first backups opening one new repository at once all open the same one (20 rounds)', async () => {
    for (let round = 0; round < 20; round++) {
      const root = fresh();
      // started a little apart, as serve's jobs are: later ones look while the first is writing pgkeep.json or its backup
      const settled = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => sleep(i).then(() => Repository.open(new PosixStorage(root), { createIfEmpty: true }))));
      const failed = settled.flatMap((s) => (s.status === 'rejected' ? [String((s.reason as Error).message)] : []));
      assert.deepEqual(failed, [], `round ${round}`);
      const ids = new Set(settled.map((s) => (s as PromiseFulfilledResult<Repository>).value.info.id));
      assert.equal(ids.size, 1, `round ${round}: one repository`);
      assert.deepEqual((await readdir(root)).filter((name) => name.startsWith(TEMP_PREFIX)), [], 'the losers\' temp files are gone');
    }
  });

  it('a location with other objects and no pgkeep.json is still refused (REPO_NOT_PGKEEP), even with only a temp file beside them', async () => {
    const root = fresh();
    await mkdir(root);
    await writeFile(path.join(root, 'notes.txt'), 'not a repository');
    await writeFile(path.join(root, `${TEMP_PREFIX}pgkeep.json.0123456789ab`), '{');
    await assert.rejects(Repository.open(new PosixStorage(root), { createIfEmpty: true }), isCode('REPO_NOT_PGKEEP'));
    await assert.rejects(Repository.open(new PosixStorage(root)), isCode('REPO_NOT_PGKEEP'));
  });
});
