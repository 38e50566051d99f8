// A node:test reporter that writes one JSON line per top-level test or suite
// ({file, ms}), for scripts/run-tests.mjs to add up per file: which files take
// longest, to keep its LONGEST_FIRST order true. Hooks outside any suite (a
// file's cluster start-up) are not in these times.
export default async function* durationReporter(source) {
  for await (const event of source) {
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.nesting === 0) {
      yield `${JSON.stringify({ file: event.data.file, ms: event.data.details?.duration_ms ?? 0 })}\n`;
    }
  }
}
