import type * as fs from 'node:fs/promises';

/**
 * Writes all of `data` at the handle's position: one write call for the whole
 * buffer where the system takes it (FileHandle.writeFile writes 512 KiB at a
 * time, a thread-pool round trip each).
 */
export async function writeAll(handle: fs.FileHandle, data: Buffer): Promise<void> {
  for (let written = 0; written < data.length; ) written += (await handle.write(data, written, data.length - written)).bytesWritten;
}
