// Gives a stopped cluster's data directory a new system identifier, so clusters
// copied from one initdb template are as distinct as clusters each made by
// initdb (pgkeep's WAL archive is claimed by one system identifier, and a
// physical backup records it).
//
// The identifier is the first 8 bytes of global/pg_control, which ends in a
// CRC-32C of everything before it. The CRC's offset differs between server
// versions, so it is found rather than hard-coded: the one 4-byte position
// whose value is the CRC of the bytes before it. WAL pages carry the
// identifier too, so pg_resetwal must run afterwards (it writes fresh WAL from
// the control file); the caller does that.

import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Writes a random system identifier into dataDir's pg_control (server stopped) and returns it. */
export async function setSystemIdentifier(dataDir: string): Promise<bigint> {
  const file = join(dataDir, 'global', 'pg_control');
  const control = await readFile(file);
  // ControlFileData is a few hundred bytes on every supported version; 1 KiB is plenty.
  let crcOffset = -1;
  for (let offset = 8; offset + 4 <= Math.min(control.length, 1024); offset += 4) {
    if (control.readUInt32LE(offset) === crc32c(control.subarray(0, offset))) {
      crcOffset = offset;
      break;
    }
  }
  if (crcOffset < 0) throw new Error(`${file}: no CRC-32C found after the control data; is this a PostgreSQL data directory?`);
  // Like PostgreSQL's own (seconds in the high half), so it still reads as a creation time.
  const identifier = (BigInt(Math.floor(Date.now() / 1000)) << 32n) | BigInt(randomBytes(4).readUInt32LE(0));
  control.writeBigUInt64LE(identifier, 0);
  control.writeUInt32LE(crc32c(control.subarray(0, crcOffset)), crcOffset);
  await writeFile(file, control);
  return identifier;
}
