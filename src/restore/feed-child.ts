import { settleAll, type RunningProcess } from '../postgres/run-process.js';

/**
 * Waits for a backup streamed into a child (pg_restore, psql) and for the
 * child. The checks of the stream decide first: damaged content that still
 * decompresses is only detected by the SHA-256 checks at the end of the
 * object, often after the child failed on it; then the damage is the cause
 * to report (CHECKSUM_MISMATCH, which also lets a restore fall back to
 * another repository), not the child's error. The stream always runs to its
 * end (the stdin sink drains what an exited child no longer reads).
 */
export async function feedChild(load: Promise<void>, child: Pick<RunningProcess, 'done' | 'stop'>): Promise<void> {
  // A load that fails (a missing object, storage refusing, an abort) stops
  // the child at once (SIGTERM, then SIGKILL): it must not wait on input that
  // will never be complete.
  const loadError = load.then(
    () => undefined,
    (error: unknown) => {
      child.stop();
      return error;
    },
  );
  try {
    await settleAll([load, child.done]);
  } catch (error) {
    const failed = await loadError;
    // A child that fails first drains its input and lets the load finish, so a failed load is the cause.
    throw failed ?? error;
  }
}

export const RESTORE_ERROR_LINE = /error|ERROR|FATAL|detail|DETAIL|hint|HINT/;
