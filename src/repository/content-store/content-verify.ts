import { createHash } from 'node:crypto';
import { collectStream, type Storage } from '../../storage/storage.js';
import { ContentStore, type StreamRef } from './content-store.js';
import { weighedGroups } from './weighed-groups.js';

/** Entries of damaged packs held at once (ContentCheckOptions.damagedEntries): what a writing session indexes in one file. */
const DAMAGED_ENTRIES = 65_536;

/** A backup as the content check sees it: who it is, and the streams it names. */
export interface BackupRefs {
  source: string;
  id: string;
  refs: StreamRef[];
}

export interface ContentCheckOptions {
  /**
   * Read only this share of the packs (0 < fraction <= 1), the ones whose
   * name falls in slot `slot` of 1/fraction slots: run with the slot moving
   * on (e.g. the day number), successive checks cover every pack.
   */
  subset?: { fraction: number; slot: number };
  /** Entries of damaged packs held at once while finding the backups they affect (65,536; smaller in tests). */
  damagedEntries?: number;
}

export interface DamagedPack {
  pack: string;
  reason: string;
  /** Every backup with a chunk in it, "source/id". */
  backups: string[];
}

export interface ContentCheckResult {
  packsChecked: number;
  packsTotal: number;
  bytesRead: number;
  damaged: DamagedPack[];
  /** Backups naming chunks that no index knows, with how many. */
  missing: { backup: string; chunks: number }[];
}

/**
 * Checks the content store the way restic's `check --read-data-subset` does:
 * every backup's chunks are in the index (always), and the packs read (all,
 * or a subset) are whole: the stored bytes hash to the pack's name, which
 * needs no key; with the identity, or in the clear, every blob also
 * decompresses to bytes that hash to its id. A damaged pack names every
 * backup that has a chunk in it.
 */
export async function checkContent(storage: Storage, store: ContentStore, backups: readonly BackupRefs[], options: ContentCheckOptions = {}): Promise<ContentCheckResult> {
  // 1. every chunk every backup names is in the index (lists included: they are chunks too); nothing kept per chunk
  const missing: ContentCheckResult['missing'] = [];
  for (const backup of backups) {
    let absent = 0;
    try {
      for (const ref of backup.refs) for await (const id of store.listChunkIds(ref)) if (!store.index.has(id)) absent++;
    } catch {
      // a list that cannot be read: counted as missing, its pack is reported below
      absent++;
    }
    if (absent > 0) missing.push({ backup: `${backup.source}/${backup.id}`, chunks: absent });
  }

  // 2. the packs: all, or one slot's share; how many blobs the index lists in each, from one pass over its entries (O(packs))
  const packs = [...store.index.packs()];
  const chosen = options.subset ? packs.filter(({ pack }) => inSlot(pack, options.subset!.fraction, options.subset!.slot)) : packs;
  const indexed = new Uint32Array(store.index.packCount);
  store.index.forEachEntry((_, record, at) => indexed[record.readUInt32LE(at + 32)]!++);
  const result: ContentCheckResult = { packsChecked: 0, packsTotal: packs.length, bytesRead: 0, damaged: [], missing };
  const reasons = new Map<string, string>();
  for (const { pack, number, sealed } of chosen) {
    result.packsChecked++;
    const reason = await checkPack(storage, store, pack, sealed, indexed[number]!, (n) => (result.bytesRead += n));
    if (reason) reasons.set(pack, reason);
  }
  if (reasons.size === 0) return result;

  // 3. which backups have a chunk in a damaged pack: their chunks walked again, against the ids of a group of
  // damaged packs of at most DAMAGED_ENTRIES entries at a time (a whole damaged repository is not held at once)
  const affected = new Map<string, Set<number>>([...reasons.keys()].map((pack) => [pack, new Set<number>()]));
  const numbers = new Map<string, number>();
  for (const { pack, number } of packs) if (reasons.has(pack)) numbers.set(pack, number);
  for (const group of weighedGroups([...reasons.keys()], (pack) => indexed[numbers.get(pack)!]!, options.damagedEntries ?? DAMAGED_ENTRIES)) {
    const damagedIds = new Map<string, string[]>();
    for (const [pack, entries] of store.index.entriesOf(group)) {
      for (const entry of entries) {
        const key = entry.id.toString('latin1');
        damagedIds.set(key, [...(damagedIds.get(key) ?? []), pack]);
      }
    }
    for (const [b, backup] of backups.entries()) {
      try {
        for (const ref of backup.refs) {
          for await (const id of store.listChunkIds(ref)) for (const pack of damagedIds.get(id.toString('latin1')) ?? []) affected.get(pack)!.add(b);
        }
      } catch {
        // a list that cannot be read (in a damaged pack: its id was seen before the read failed)
      }
    }
  }
  for (const [pack, reason] of reasons) {
    result.damaged.push({ pack, reason, backups: [...affected.get(pack)!].sort((x, y) => x - y).map((b) => `${backups[b]!.source}/${backups[b]!.id}`) });
  }
  return result;
}

/** Why a pack is damaged, or undefined when it is whole. */
async function checkPack(storage: Storage, store: ContentStore, pack: string, sealed: boolean, indexed: number, read: (bytes: number) => void): Promise<string | undefined> {
  let stored: Buffer;
  try {
    stored = await collectStream(await storage.get(ContentStore.packKey(pack)));
  } catch (error) {
    return `cannot be read: ${(error as Error).message}`;
  }
  read(stored.length);
  if (createHash('sha256').update(stored).digest('hex') !== pack) return 'its bytes do not hash to its name (changed or cut short)';
  if (sealed && store.settings.identities.length === 0) return undefined; // whole as stored; its blobs need the identity
  try {
    const blobs = store.checkPackBlobs(sealed ? await store.openPack(stored, pack) : stored, pack);
    if (blobs !== indexed) return `its header lists ${blobs} blobs, the index ${indexed}`;
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}

/** Whether a pack falls in this slot: its name's first 32 bits, scaled to [0, 1), against the slot's share. */
export function inSlot(pack: string, fraction: number, slot: number): boolean {
  const slots = Math.max(1, Math.round(1 / fraction));
  return parseInt(pack.slice(0, 8), 16) % slots === ((slot % slots) + slots) % slots;
}
