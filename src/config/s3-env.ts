import { PgkeepError } from '../errors.js';
import { parseDuration } from '../retention/duration.js';
import type { S3StorageOptions } from '../storage/open-storage.js';

/** The S3 timeouts' environment variables (durations: 500ms is not accepted, 0.5s is). */
export const S3_TIMEOUT_ENV = {
  connectionTimeoutMs: 'PGKEEP_S3_CONNECT_TIMEOUT',
  idleTimeoutMs: 'PGKEEP_S3_IDLE_TIMEOUT',
  requestTimeoutMs: 'PGKEEP_S3_REQUEST_TIMEOUT',
  retryBudgetMs: 'PGKEEP_S3_RETRY_BUDGET',
} as const;

/**
 * PGKEEP_S3_* from `env` as S3 driver options: defaults for every S3
 * repository, under the options its configuration sets. Read here, from the
 * environment the CLI handed to the settings, because the driver reads none.
 */
export function s3EnvOptions(env: Readonly<Record<string, string | undefined>>): Partial<S3StorageOptions> {
  const options: Partial<S3StorageOptions> = {};
  for (const [option, variable] of Object.entries(S3_TIMEOUT_ENV) as [keyof typeof S3_TIMEOUT_ENV, string][]) {
    const text = env[variable];
    if (!text) continue;
    try {
      options[option] = parseDuration(text, variable).ms;
    } catch (error) {
      throw new PgkeepError('CONFIG_INVALID', (error as Error).message, { cause: error });
    }
  }
  const attempts = env.PGKEEP_S3_MAX_ATTEMPTS;
  if (attempts) {
    if (!/^\d+$/.test(attempts) || Number(attempts) < 1) throw new PgkeepError('CONFIG_INVALID', `PGKEEP_S3_MAX_ATTEMPTS: "${attempts}" is not a whole number of at least 1`);
    options.maxAttempts = Number(attempts);
  }
  return options;
}
