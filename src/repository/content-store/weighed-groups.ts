/**
 * Items in groups whose weights add up to at most `cap` (an item heavier than that alone), in order: how
 * prune and verify take the entries of many packs a bounded number at a time.
 */
export function* weighedGroups<T>(items: readonly T[], weight: (item: T) => number, cap: number): Generator<T[]> {
  let group: T[] = [];
  let total = 0;
  for (const item of items) {
    const w = weight(item);
    if (group.length > 0 && total + w > cap) {
      yield group;
      group = [];
      total = 0;
    }
    group.push(item);
    total += w;
  }
  if (group.length > 0) yield group;
}
