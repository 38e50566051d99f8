import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The abort signal of the command (or daemon job) that is running, as seen by
 * storage drivers. A command hands its signal down through many layers
 * (repository, pipeline, manifests, locks) that have no signal parameter of
 * their own; the S3 driver needs it at every request so that SIGINT/SIGTERM
 * (or a cancelled daemon job) aborts a request stalled on the network at
 * once, instead of when its timeouts fire. An async context reaches every
 * request made on behalf of the command without widening each interface.
 */
const current = new AsyncLocalStorage<AbortSignal>();

/** Runs `fn` with `signal` as the signal every storage request made inside it honours. */
export function withRunSignal<T>(signal: AbortSignal, fn: () => T): T {
  return current.run(signal, fn);
}

/** The running command's signal, or undefined outside of one (tests calling drivers directly). */
export function runSignal(): AbortSignal | undefined {
  return current.getStore();
}
