import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { PgkeepError } from '../errors.js';
import { configSchemas, type PgkeepConfig } from './config-schema.js';

export interface LoadedConfig {
  readonly path: string | undefined;
  readonly config: Readonly<PgkeepConfig>;
}

/**
 * Finds and validates the config file: --config, else PGKEEP_CONFIG, else
 * pgkeep.yaml / pgkeep.yml in the working folder; none is fine (zero-config).
 */
export function loadConfig(explicit: string | undefined, env: Record<string, string | undefined>, cwd: string): LoadedConfig {
  const named = explicit ?? env.PGKEEP_CONFIG;
  let file: string | undefined;
  if (named) {
    file = path.resolve(cwd, named);
    if (!existsSync(file)) {
      throw new PgkeepError('CONFIG_NOT_FOUND', `config file ${named} does not exist: check --config or PGKEEP_CONFIG`);
    }
  } else {
    file = ['pgkeep.yaml', 'pgkeep.yml'].map((f) => path.join(cwd, f)).find((f) => existsSync(f));
  }
  if (!file) return deepFreeze({ path: undefined, config: {} });
  return deepFreeze({ path: file, config: parseConfig(readFileSync(file, 'utf8'), path.basename(file), env) });
}

export function parseConfig(text: string, name: string, env: Record<string, string | undefined>): PgkeepConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (error) {
    const first = String((error as Error).message).split('\n')[0];
    throw new PgkeepError('CONFIG_INVALID', `${name} is not valid YAML: ${first}`, { cause: error });
  }
  const expanded = expandVariables(raw, env, name, []);
  const result = configSchemas().ConfigSchema.safeParse(expanded);
  if (!result.success) throw new PgkeepError('CONFIG_INVALID', `${name}: ${formatIssue(result.error.issues[0]!)}`);
  return result.data;
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.map(String).join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    return `${where === '(top level)' ? '' : `${where}: `}unknown key ${keys.map((k) => `"${k}"`).join(', ')} (check the spelling)`;
  }
  return `${where}: ${issue.message}`;
}

/** Replaces ${VAR} and ${VAR:-default} in every string value. */
function expandVariables(value: unknown, env: Record<string, string | undefined>, file: string, at: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback: string | undefined) => {
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      throw new PgkeepError('CONFIG_INVALID', `${file}: ${at.join('.')}: environment variable ${name} is not set (set it, or write \${${name}:-default})`);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandVariables(v, env, file, [...at, String(i)]));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandVariables(v, env, file, [...at, k])]));
  }
  return value;
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
