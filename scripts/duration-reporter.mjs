// A node:test reporter that writes one JSON line per top-level test or suite
// ({file, ms}), for scripts/run-tests.mjs to add up per file: which files take
// longest, to keep its LONGEST_FIRST order true. Hooks outside any suite (a
// file's cluster start-up) are not in these times.
//
// A suite made by a helper (test/support/each-storage.ts) reports the helper's
// file as its own; its tests are written in the test file, and a suite ends
// after its tests, so it is counted for the test file seen last in them.
const TEST_FILE = /\.test\.[cm]?[jt]s$/;

export default async function* durationReporter(source) {
  let lastTestFile;
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { file, nesting } = event.data;
    if (file && TEST_FILE.test(file)) lastTestFile = file;
    if (nesting === 0) {
      yield `${JSON.stringify({ file: file && !TEST_FILE.test(file) && lastTestFile ? lastTestFile : file, ms: event.data.details?.duration_ms ?? 0 })}\n`;
    }
  }
}
