import { setFlagsFromString } from 'node:v8';

let done = false;

/**
 * Stops V8's young generation from growing past its first size (1 MiB a semi-space) for the rest of the
 * process: `--semi-space-growth-factor=1`, one of the few heap flags V8 reads after start-up (each time the
 * new space would grow), where `--max-semi-space-size` is fixed when the heap is made.
 *
 * Why: writing a content store keeps a few small objects per new chunk (its id, pack entry, pending key)
 * until its pack and index file are written; so many survivors make V8 double the young generation up to
 * 2 x 16 MiB, and with it the time dead buffers (the pipe's 64 KiB reads of pg_dump's output) wait to be
 * collected. Measured on a first backup of a 1.2 GB database into a deduplicating repository: peak RSS
 * 180 -> 142 MB, CPU no higher (docs/benchmarks.md, "Backup memory, session 12").
 */
export function keepYoungGenerationSmall(): void {
  if (done) return;
  done = true;
  setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * Sets the flag again if keepYoungGenerationSmall() set it: a worker thread, as it starts, sets V8's flags
 * back to the command line's, and the main thread's young generation then grew to 2 x 16 MiB again (a first
 * backup with chunks compressed on a worker peaked at 192 MiB, 143 with the flag set again: ChunkCompressPool). Call it once
 * the worker runs ('online'): before, the worker's start-up would undo it.
 */
export function keepYoungGenerationSmallAgain(): void {
  if (done) setFlagsFromString('--semi-space-growth-factor=1');
}
