// A node:test reporter that writes one JSON line per skipped test or suite
// ({file, name, reason}), for scripts/run-tests.mjs to summarise. Node's own
// summary counts skipped tests but not skipped suites, and names neither.
export default async function* skipReporter(source) {
  for await (const event of source) {
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.skip !== undefined && event.data.skip !== false) {
      const reason = typeof event.data.skip === 'string' && event.data.skip !== '' ? event.data.skip : 'no reason given';
      yield `${JSON.stringify({ file: event.data.file, name: event.data.name, reason })}\n`;
    }
  }
}
