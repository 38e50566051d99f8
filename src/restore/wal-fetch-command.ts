import { fileURLToPath } from 'node:url';
import type { KeySettings, Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';

/** Quoted for /bin/sh (PostgreSQL runs restore_command through the shell); plain words stay as they are. */
export function shellQuote(text: string): string {
  if (/^[A-Za-z0-9_./:@=+-]+$/.test(text)) return text;
  // inside single quotes nothing is special but the quote itself: close, an escaped quote, reopen
  const QUOTE = "'";
  return QUOTE + text.split(QUOTE).join(`${QUOTE}\\${QUOTE}${QUOTE}`) + QUOTE;
}

/**
 * The restore_command of a recovery pgkeep sets up: this same pgkeep (the
 * Node executable and its entry script, or the runner's walFetchEntry), `wal-fetch %f %p`, the source, the
 * repository, the config file and the identity file. The server runs it as
 * its own OS user, so those files must be readable by that user. An
 * encrypted repository needs an identity file (a passphrase in the
 * environment does not reach the server's restore_command).
 */
export function walFetchCommand(
  settings: Settings,
  keys: KeySettings,
  options: { source: string; repo: string; encrypted: boolean; entry?: readonly string[] | undefined },
): string {
  // The server runs this program, not the process that set the recovery up:
  // by default this same pgkeep; a runner from the sources (the tests) gives the built one.
  const entry = options.entry ?? [process.execPath, fileURLToPath(new URL('../cli/pgkeep.js', import.meta.url))];
  const fetch = [...entry, 'wal-fetch', '%f', '%p', '--source', options.source, '--repo', options.repo];
  if (settings.configFile) fetch.push('--config', settings.configFile);
  if (keys.identityFile) fetch.push('--identity', keys.identityFile);
  else if (options.encrypted && !settings.config.passphraseFile) {
    throw new PgkeepError('USAGE', "the repository is encrypted: pitr needs --identity FILE (readable by the server's OS user; or the config's identityFile or passphraseFile), which restore_command passes to pgkeep wal-fetch");
  }
  return fetch.map((part) => (part === '%f' || part === '%p' ? part : shellQuote(part))).join(' ');
}
