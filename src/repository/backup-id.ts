import { PgkeepError } from '../errors.js';

const ID_PATTERN = /^(\d{8}T\d{6}Z)(?:-([A-Za-z0-9._-]{1,100}))?$/;

/** 20261121T020000Z: sorts by time as text. */
export function timestampPart(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

export function makeBackupId(date: Date, name?: string): string {
  if (name !== undefined) validateBackupName(name);
  return name ? `${timestampPart(date)}-${name}` : timestampPart(date);
}

export function validateBackupName(name: string): void {
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(name) || name === '.' || name === '..') {
    throw new PgkeepError('INVALID_NAME', `invalid backup name "${name}": use letters, digits, ".", "_" and "-" (at most 100 characters)`);
  }
}

export function isBackupId(text: string): boolean {
  return ID_PATTERN.test(text);
}

/** Checks an id (or a user's reference to one) before it touches a path. */
export function validateBackupId(id: string): string {
  if (!isBackupId(id)) {
    throw new PgkeepError('INVALID_NAME', `"${id}" is not a backup id: ids look like 20261121T020000Z or 20261121T020000Z-name (see pgkeep list), or use "latest"`);
  }
  return id;
}

export function backupIdTime(id: string): Date {
  const stamp = ID_PATTERN.exec(id)?.[1];
  if (!stamp) throw new PgkeepError('INVALID_NAME', `"${id}" is not a backup id`);
  const iso = `${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}Z`;
  return new Date(iso);
}
