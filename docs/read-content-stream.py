#!/usr/bin/env python3
"""Writes one stream of a pgkeep content store to stdout, without pgkeep.

usage: read-content-stream.py REPOSITORY_FOLDER 'STREAM_REF_JSON'

For an unencrypted repository (docs/content-store.md). Needs Python 3 and the
zstd program. Every chunk is checked against its id (SHA-256).
"""
import glob
import hashlib
import json
import subprocess
import sys

repo, ref = sys.argv[1], json.loads(sys.argv[2])

# the index: chunk id -> (pack, offset, length)
index = {}
for name in glob.glob(f'{repo}/content/index/*'):
    doc = json.loads(subprocess.run(['zstd', '-dc', name], capture_output=True, check=True).stdout)
    for pack in doc['packs']:
        for cid, offset, length, _raw in pack['chunks']:
            index.setdefault(cid, (pack['pack'], offset, length))


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
