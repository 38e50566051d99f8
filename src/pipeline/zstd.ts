import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Duplex, type Transform } from 'node:stream';
import { PgkeepError } from '../errors.js';

/**
 * zstd compression as a stream. The native binding (zstd-napi, multi-threaded
 * in-process) is used when it is installed; otherwise the `zstd` program.
 * Both write standard zstd frames, so `zstd -d` can always read what we store.
 */
export interface ZstdCodec {
  readonly name: 'zstd-napi' | 'zstd-cli';
  compressor(options?: { level?: number; threads?: number }): Transform | Duplex;
  decompressor(): Transform | Duplex;
}

export const DEFAULT_ZSTD_LEVEL = 3;

interface ZstdNapi {
  CompressStream: new (params: Record<string, unknown>) => Transform;
  DecompressStream: new () => Transform;
}

let nativeModule: ZstdNapi | null | undefined;

function loadNative(): ZstdNapi | null {
  if (nativeModule === undefined) {
    try {
      nativeModule = createRequire(import.meta.url)('zstd-napi') as ZstdNapi;
    } catch {
      nativeModule = null;
    }
  }
  return nativeModule;
}

export const nativeZstd: ZstdCodec | null = (() => {
  const native = loadNative();
  if (!native) return null;
  return {
    name: 'zstd-napi',
    compressor: ({ level = DEFAULT_ZSTD_LEVEL, threads = availableParallelism() } = {}) =>
      // jobSize 4 MiB keeps the multi-threaded buffers (and so pgkeep's RSS) small.
      new native.CompressStream({ compressionLevel: level, nbWorkers: threads > 1 ? threads : 0, jobSize: 4 << 20, checksumFlag: true }),
    decompressor: () => new native.DecompressStream(),
  };
})();

export const cliZstd: ZstdCodec = {
  name: 'zstd-cli',
  compressor: ({ level = DEFAULT_ZSTD_LEVEL, threads = 0 } = {}) => zstdProcess(['-q', '-c', `-${level}`, `-T${threads}`]),
  decompressor: () => zstdProcess(['-q', '-d', '-c']),
};

/** The codec pgkeep uses: native when available, else the zstd program. */
export function defaultZstd(): ZstdCodec {
  if (process.env.PGKEEP_ZSTD === 'cli') return cliZstd;
  return nativeZstd ?? cliZstd;
}

/** Wraps a `zstd` child process as a duplex stream that fails if zstd fails. */
function zstdProcess(args: string[]): Duplex {
  const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-2000);
  });
  const exit = new Promise<Error | undefined>((resolve) => {
    child.on('error', (error) => {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      resolve(
        missing
          ? new PgkeepError('TOOL_MISSING', 'zstd is not installed: install the zstd package (apt-get install zstd) or run npm ci to build zstd-napi', { cause: error })
          : error,
      );
    });
    child.on('close', (code, signal) => {
      resolve(code === 0 ? undefined : new PgkeepError('TOOL_FAILED', `zstd failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
    });
  });
  child.stdin.on('error', () => undefined); // EPIPE surfaces through the exit status instead

  const duplex = new Duplex({
    readableHighWaterMark: 1 << 20,
    writableHighWaterMark: 1 << 20,
    write(chunk, _encoding, callback) {
      if (child.stdin.write(chunk)) callback();
      else child.stdin.once('drain', () => callback());
    },
    final(callback) {
      child.stdin.end();
      callback();
    },
    read() {
      child.stdout.resume();
    },
    destroy(error, callback) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      callback(error);
    },
  });
  child.stdout.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) child.stdout.pause();
  });
  // End our readable side only once zstd has exited cleanly, so a failed zstd
  // never looks like a complete stream downstream.
  child.stdout.on('end', () => void exit.then((error) => (error ? duplex.destroy(error) : duplex.push(null))));
  void exit.then((error) => {
    if (error) duplex.destroy(error);
  });
  return duplex;
}
