import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { PgkeepError, abortError } from '../errors.js';

export interface ProcessOptions {
  /** Full environment for the child (secrets go here, never in args). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdin?: 'pipe' | 'ignore';
  stdout?: 'pipe' | 'ignore';
  signal?: AbortSignal;
  /** Milliseconds before the process is stopped as hung. */
  timeoutMs?: number;
  /** Called with each stderr line (e.g. pg_dump --verbose progress). */
  onStderrLine?: (line: string) => void;
  /** Selects the stderr lines worth quoting in an error message; default: all. */
  isErrorLine?: (line: string) => boolean;
  /** Grace period between SIGTERM and SIGKILL. */
  killGraceMs?: number;
  /** Run as this user and group (root starting a PostgreSQL server as the postgres user). */
  uid?: number | undefined;
  gid?: number | undefined;
}

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  /** Resolves when the process exited 0 and its streams closed; rejects TOOL_FAILED/TOOL_MISSING/ABORTED otherwise. */
  readonly done: Promise<void>;
  /** SIGTERM now, SIGKILL after the grace period. */
  stop(): void;
}

/**
 * Starts a program with an argv array (never a shell). Failures carry the
 * program's own error lines, so the user sees why it failed, not just a code.
 */
export function startProcess(command: string, args: readonly string[], options: ProcessOptions = {}): RunningProcess {
  const name = command.split('/').pop() ?? command;
  const child = spawn(command, args, {
    // No env given: spawn passes the process's own on, as every child inherits it.
    env: options.env,
    cwd: options.cwd,
    stdio: [options.stdin ?? 'ignore', options.stdout ?? 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });

  const errorLines: string[] = [];
  let partial = '';
  const takeLine = (line: string) => {
    if (line === '') return;
    options.onStderrLine?.(line);
    if (!options.isErrorLine || options.isErrorLine(line)) {
      errorLines.push(line);
      if (errorLines.length > 20) errorLines.shift();
    }
  };
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    lines.forEach(takeLine);
  });

  let killTimer: NodeJS.Timeout | undefined;
  let stopReason: PgkeepError | undefined;
  const stop = (reason?: PgkeepError) => {
    stopReason ??= reason;
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    killTimer ??= setTimeout(() => child.kill('SIGKILL'), options.killGraceMs ?? 5000);
    killTimer.unref();
  };
  const onAbort = () => stop(abortError(options.signal!));
  if (options.signal?.aborted) queueMicrotask(onAbort);
  else options.signal?.addEventListener('abort', onAbort, { once: true });
  const timeout =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => stop(new PgkeepError('TOOL_FAILED', `${name} did not finish within ${Math.round(options.timeoutMs! / 1000)} s and was stopped`)), options.timeoutMs);

  // Swallow EPIPE on stdin: a child that exits early reports through its exit status.
  child.stdin?.on('error', () => undefined);

  const done = new Promise<void>((resolve, reject) => {
    let spawnError: Error | undefined;
    child.on('error', (error) => {
      spawnError = error;
    });
    // 'close' fires after exit *and* after stdio streams closed.
    child.on('close', (code, signal) => {
      if (partial) takeLine(partial);
      clearTimeout(killTimer);
      clearTimeout(timeout);
      options.signal?.removeEventListener('abort', onAbort);
      if (spawnError) {
        const missing = (spawnError as NodeJS.ErrnoException).code === 'ENOENT';
        reject(
          missing
            ? new PgkeepError('TOOL_MISSING', `${name} was not found (${command}): install the PostgreSQL client (apt-get install postgresql-client) or set PG_BIN`, { cause: spawnError })
            : new PgkeepError('TOOL_FAILED', `${name} could not be started: ${spawnError.message}`, { cause: spawnError }),
        );
      } else if (stopReason) {
        reject(stopReason);
      } else if (code === 0) {
        resolve();
      } else {
        const why = errorLines.map((l) => l.replace(new RegExp(`^${name}: (error: )?`), '')).join('; ');
        reject(
          new PgkeepError('TOOL_FAILED', `${name} failed (${signal ? `killed by ${signal}` : `exit ${code}`}): ${why || 'no error message'}`, {
            details: { exitCode: code, signal, stderr: errorLines },
          }),
        );
      }
    });
  });

  return { child, stdin: child.stdin, stdout: child.stdout, done, stop: () => stop() };
}

/** Runs a program to completion and returns its stdout (for small outputs like --version or --list). */
export async function runProcess(command: string, args: readonly string[], options: ProcessOptions = {}): Promise<string> {
  const running = startProcess(command, args, { ...options, stdout: 'pipe' });
  const chunks: Buffer[] = [];
  running.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
  await running.done;
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Waits for all promises, then throws the error that happened first. When one
 * stage of a pipeline fails, the others fail as a consequence (broken pipe,
 * premature close); the first failure is the cause the user needs to see.
 */
export async function settleAll(promises: Promise<unknown>[]): Promise<void> {
  let first: { error: unknown } | undefined;
  await Promise.all(
    promises.map((p) =>
      p.catch((error) => {
        first ??= { error };
      }),
    ),
  );
  if (first) throw first.error;
}
