import type { Writable } from 'node:stream';
import { keySettings, type KeySettings, type Settings } from '../config/settings.js';
import type { CommandRegistry } from './command-registry.js';
import type { RepositoryStorage } from '../repository/repo-info.js';

/** Live progress of a long job, for a progress bar or the daemon's job view. */
export interface Progress {
  phase: string;
  bytes: number;
  totalBytes?: number | undefined;
  item?: string | undefined;
}

/**
 * What a command gets from whoever runs it (the CLI, the daemon, a test):
 * settings, a way to report, cancellation, and a way to ask the user.
 * Commands never print or read stdin themselves.
 */
export interface CommandContext {
  readonly settings: Settings;
  /** Identity file and passphrase for encrypted repositories. */
  readonly keys: KeySettings;
  readonly signal: AbortSignal;
  /** One line of human progress ("dumping", "restoring into …"). */
  info(message: string): void;
  warn(message: string): void;
  progress(progress: Progress): void;
  /**
   * Asks the user to type `expected` to confirm a destructive action.
   * Resolves false when there is nobody to ask (no TTY).
   */
  confirm(question: string, expected: string): Promise<boolean>;
  /** Where a command writes the data it produces when no file is given (the CLI's stdout; extract's rows). */
  readonly stdout?: Writable | undefined;
  /** Every command, for those that run others (serve's jobs, the dashboard's actions): given by whoever runs them. */
  readonly registry?: CommandRegistry | undefined;
  /**
   * The program a recovery's restore_command runs for `wal-fetch`: the Node
   * executable and pgkeep's entry script, as [executable, ...args]. Default:
   * this same pgkeep. Given by a runner whose own entry is not pgkeep's
   * program (the tests run commands in their own process, from the sources,
   * and point the server at the built CLI).
   */
  readonly walFetchEntry?: readonly string[] | undefined;
}

/** A context that reports nothing and never confirms: for tests and the daemon. */
export function quietContext(settings: Settings, signal: AbortSignal = new AbortController().signal): CommandContext {
  return {
    settings,
    keys: keySettings(settings),
    signal,
    info: () => undefined,
    warn: () => undefined,
    progress: () => undefined,
    confirm: async () => false,
  };
}

/**
 * What the WAL commands need. Deliberately smaller than CommandContext: they
 * run once per segment from archive_command / restore_command and must start
 * fast, so they load neither the config schema nor the Repository class.
 */
export interface WalContext {
  storage: RepositoryStorage;
  source: string;
  keys: KeySettings;
  signal: AbortSignal;
}
