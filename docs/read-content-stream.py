#!/usr/bin/env python3
"""Writes one stream of a pgkeep content store to stdout, without pgkeep.

usage: read-content-stream.py REPOSITORY_FOLDER 'STREAM_REF_JSON'

For an unencrypted repository (docs/content-store.md). Needs Python 3 and the
zstd program. Every chunk is checked against its id (SHA-256).
"""
import glob
import hashlib
import json
import struct
import subprocess
import sys

repo, ref = sys.argv[1], json.loads(sys.argv[2])

# the index: chunk id -> (pack, offset, length)
index = {}


def read_index_file(name):
    """The (id, pack, offset, length) records of one index file: version 2 (binary) or 1 (zstd-compressed JSON)."""
    with open(name, 'rb') as f:
        data = f.read()
    if data[:8] == b'PGKINDEX':
        version, npacks, nentries, _ = struct.unpack_from('<4I', data, 8)
        assert version == 2, f'{name}: index file version {version}'
        assert hashlib.sha256(data[:-32]).digest() == data[-32:], f'{name} is damaged'
        packs = [data[24 + 48 * i:24 + 48 * i + 32].hex() for i in range(npacks)]
        at = 24 + 48 * npacks
        for _ in range(nentries):
            cid = data[at:at + 32].hex()
            pack, offset, length, _raw = struct.unpack_from('<4I', data, at + 32)
            yield cid, packs[pack], offset, length
            at += 48
        return
    doc = json.loads(subprocess.run(['zstd', '-dc', name], capture_output=True, check=True).stdout)
    for pack in doc['packs']:
        for cid, offset, length, _raw in pack['chunks']:
            yield cid, pack['pack'], offset, length


for name in glob.glob(f'{repo}/content/index/*'):
    for cid, pack, offset, length in read_index_file(name):
        index.setdefault(cid, (pack, offset, length))


def chunk(cid):
    pack, offset, length = index[cid]
    with open(f'{repo}/content/packs/{pack[:2]}/{pack}', 'rb') as f:
        f.seek(offset)
        blob = f.read(length)
    data = subprocess.run(['zstd', '-dc'], input=blob, capture_output=True, check=True).stdout
    if hashlib.sha256(data).hexdigest() != cid:
        sys.exit(f'chunk {cid} in pack {pack} does not match its id')
    return data


def ids(depth, root):
    """The chunk ids of the stream: depth 0 lists them; deeper, the chunks one level down hold 32-byte ids."""
    if depth == 0:
        yield from root
        return
    listing = b''.join(chunk(c) for c in ids(depth - 1, root))
    for at in range(0, len(listing), 32):
        yield listing[at:at + 32].hex()


out = sys.stdout.buffer
size = 0
for cid in ids(ref['depth'], ref['root']):
    data = chunk(cid)
    size += len(data)
    out.write(data)
if size != ref['size']:
    sys.exit(f'the stream is {size} bytes, the ref says {ref["size"]}')
