;; pgkeep's WebAssembly module: the two loops that see every byte of a
;; logical backup, written by hand in WebAssembly text.
;;
;; Assembled by scripts/build-wasm.mjs (wabt, pinned) into
;; src/pipeline/pgkeep-wasm-bytes.ts, which is checked in and bundled; a unit
;; test assembles this file again and fails when the two differ. Why WASM and
;; why by hand: docs/architecture.md ("WebAssembly for the byte loops").
;;
;; Each user (a chunker, a row counter) instantiates the module with its own
;; memory, so the state below is per user. The caller copies its bytes into
;; memory and makes one call per buffer: no call per byte or per chunk.
;;
;; Memory layout (offsets in bytes; the callers place their data above 2048):
;;   0 .. 1023     the gear table: 256 little-endian u32 (chunker)
;;   1024 .. 1028  the COPY trailer `\.` and two blank lines (row walker)
(module
  (memory (export "memory") 8)
  (data (i32.const 1024) "\\.\n\n\n")

  ;; ---------------------------------------------------------------------
  ;; The content-defined chunker: FastCDC with normalized chunking, exactly
  ;; the cuts of the JavaScript reference (test/support/reference-chunker.ts).
  ;; Per byte at position L of the current chunk (L bytes before it):
  ;;   L < min:            not hashed (the hash stays as it is);
  ;;   else                hash = (hash << 1) + gear[byte] (mod 2^32), and
  ;;                       a cut after the byte when hash & mask == 0, with
  ;;                       mask = maskSmall for L < average, else maskLarge;
  ;;   L + 1 == max:       a cut after the byte in any case.
  ;; A cut resets L and the hash to 0.
  ;; ---------------------------------------------------------------------
  (global $min (mut i32) (i32.const 0))
  (global $average (mut i32) (i32.const 0))
  (global $max (mut i32) (i32.const 0))
  (global $maskSmall (mut i32) (i32.const 0))
  (global $maskLarge (mut i32) (i32.const 0))
  ;; bytes of the current chunk seen so far, and its hash
  (global $length (mut i32) (i32.const 0))
  (global $hash (mut i32) (i32.const 0))

  ;; Sizes and masks; the caller has written the gear table at 0.
  (func (export "chunkerInit") (param $min i32) (param $average i32) (param $max i32) (param $maskSmall i32) (param $maskLarge i32)
    (global.set $min (local.get $min))
    (global.set $average (local.get $average))
    (global.set $max (local.get $max))
    (global.set $maskSmall (local.get $maskSmall))
    (global.set $maskLarge (local.get $maskLarge))
    (global.set $length (i32.const 0))
    (global.set $hash (i32.const 0)))

  ;; The caller ended the chunk (cut()): the next byte starts a new one.
  (func (export "chunkerReset")
    (global.set $length (i32.const 0))
    (global.set $hash (i32.const 0)))

  ;; Scans the $n bytes at $data. Writes the end of each chunk completed in
  ;; them (an offset from $data) as an i32 at $cuts, $cuts + 4, ...; returns
  ;; how many. The caller leaves room for n / min + 1 of them.
  ;;
  ;; Addresses are compared signed: $base, the start of the current chunk,
  ;; lies before $data when the chunk began in an earlier buffer, and the
  ;; caller keeps memory far below 2 GiB.
  (func (export "chunkerScan") (param $data i32) (param $n i32) (param $cuts i32) (result i32)
    (local $p i32) (local $end i32) (local $base i32) (local $stop i32) (local $h i32) (local $count i32)
    (local.set $p (local.get $data))
    (local.set $end (i32.add (local.get $data) (local.get $n)))
    (local.set $base (i32.sub (local.get $data) (global.get $length)))
    (local.set $h (global.get $hash))
    (block $save
      (loop $chunk
        (br_if $save (i32.ge_s (local.get $p) (local.get $end)))
        ;; the first `min` bytes of a chunk are never a cut: skip them without hashing
        (local.set $stop (i32.add (local.get $base) (global.get $min)))
        (if (i32.lt_s (local.get $p) (local.get $stop))
          (then
            (if (i32.ge_s (local.get $stop) (local.get $end))
              (then
                (local.set $p (local.get $end))
                (br $save)))
            (local.set $p (local.get $stop))))
        (block $cut
          ;; below the average: the stricter mask
          (local.set $stop (i32.add (local.get $base) (global.get $average)))
          (if (i32.gt_s (local.get $stop) (local.get $end)) (then (local.set $stop (local.get $end))))
          (if (i32.lt_s (local.get $p) (local.get $stop))
            (then
              (loop $small
                (local.set $h
                  (i32.add
                    (i32.shl (local.get $h) (i32.const 1))
                    (i32.load (i32.shl (i32.load8_u (local.get $p)) (i32.const 2)))))
                (local.set $p (i32.add (local.get $p) (i32.const 1)))
                (br_if $cut (i32.eqz (i32.and (local.get $h) (global.get $maskSmall))))
                (br_if $small (i32.lt_s (local.get $p) (local.get $stop))))))
          ;; from the average on: the looser mask, up to max
          (local.set $stop (i32.add (local.get $base) (global.get $max)))
          (if (i32.gt_s (local.get $stop) (local.get $end)) (then (local.set $stop (local.get $end))))
          (if (i32.lt_s (local.get $p) (local.get $stop))
            (then
              (loop $large
                (local.set $h
                  (i32.add
                    (i32.shl (local.get $h) (i32.const 1))
                    (i32.load (i32.shl (i32.load8_u (local.get $p)) (i32.const 2)))))
                (local.set $p (i32.add (local.get $p) (i32.const 1)))
                (br_if $cut (i32.eqz (i32.and (local.get $h) (global.get $maskLarge))))
                (br_if $large (i32.lt_s (local.get $p) (local.get $stop))))))
          ;; max reached: a cut whatever the hash; else the buffer ended inside the chunk
          (br_if $cut (i32.eq (local.get $p) (i32.add (local.get $base) (global.get $max))))
          (br $save))
        ;; a cut after the byte before $p
        (i32.store
          (i32.add (local.get $cuts) (i32.shl (local.get $count) (i32.const 2)))
          (i32.sub (local.get $p) (local.get $data)))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (local.set $base (local.get $p))
        (local.set $h (i32.const 0))
        (br $chunk)))
    (global.set $length (i32.sub (local.get $end) (local.get $base)))
    (global.set $hash (local.get $h))
    (local.get $count))
;; ---------------------------------------------------------------------
  ;; The row walker: the data block of one table in an uncompressed custom
  ;; archive (dump-row-counter.ts), with the counts of the JavaScript walk it
  ;; replaced (DumpRowCounter with walk 'javascript'). The block is a run of
  ;; chunks, each an int (a sign byte, then intSize bytes, least significant
  ;; first: pg_dump's WriteInt) and that many bytes of COPY text, ended by a
  ;; length of 0. Counts the newlines of the chunks' bytes (one per row, plus
  ;; the three of the COPY trailer) and whether the last chunk was the trailer.
  ;; ---------------------------------------------------------------------
  (global $intSize (mut i32) (i32.const 4))
  ;; bytes of the current chunk still to come (0: an int is next)
  (global $remaining (mut i32) (i32.const 0))
  ;; the int being read across buffers: bytes read so far (0: none), its sign byte and value
  (global $intHave (mut i32) (i32.const 0))
  (global $intSign (mut i32) (i32.const 0))
  (global $intValue (mut i64) (i64.const 0))
  ;; the current chunk: its length, and whether its bytes so far match the trailer
  (global $chunkLength (mut i32) (i32.const 0))
  (global $trailerSoFar (mut i32) (i32.const 0))
  (global $lastWasTrailer (mut i32) (i32.const 0))
  ;; of the last rowsWalk: newlines seen, and why it stopped (0: the bytes ran out, 1: the block ended, 2: a bad length)
  (global $newlines (mut i32) (i32.const 0))
  (global $status (mut i32) (i32.const 0))

  ;; A data block starts (its id has been read). intSize is at most 8.
  (func (export "rowsBegin") (param $intSize i32)
    (global.set $intSize (local.get $intSize))
    (global.set $remaining (i32.const 0))
    (global.set $intHave (i32.const 0))
    (global.set $intSign (i32.const 0))
    (global.set $intValue (i64.const 0))
    (global.set $chunkLength (i32.const 0))
    (global.set $trailerSoFar (i32.const 0))
    (global.set $lastWasTrailer (i32.const 0)))

  (func (export "rowsNewlines") (result i32) (global.get $newlines))
  (func (export "rowsStatus") (result i32) (global.get $status))
  (func (export "rowsLastWasTrailer") (result i32) (global.get $lastWasTrailer))
  ;; The length that stopped the walk with status 2, signed (as pg_dump's ReadInt reads it).
  (func (export "rowsBadLength") (result f64)
    (if (result f64) (global.get $intSign)
      (then (f64.neg (f64.convert_i64_u (global.get $intValue))))
      (else (f64.convert_i64_u (global.get $intValue)))))

  ;; Newlines (byte 10) in the $n bytes at $p, 16 at a time. The last
  ;; partial vector reads up to 15 bytes past the end: the caller leaves that
  ;; much memory after its data (the bits of those bytes are masked off).
  (func $countNewlines (param $p i32) (param $n i32) (result i32)
    (local $count i32) (local $end i32)
    (local.set $end (i32.add (local.get $p) (i32.and (local.get $n) (i32.const -16))))
    (block $done
      (loop $vectors
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $count
          (i32.add (local.get $count)
            (i32.popcnt (i8x16.bitmask (i8x16.eq (v128.load (local.get $p)) (i8x16.splat (i32.const 10)))))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $vectors)))
    (if (i32.and (local.get $n) (i32.const 15))
      (then
        (local.set $count
          (i32.add (local.get $count)
            (i32.popcnt
              (i32.and
                (i8x16.bitmask (i8x16.eq (v128.load (local.get $p)) (i8x16.splat (i32.const 10))))
                (i32.sub (i32.shl (i32.const 1) (i32.and (local.get $n) (i32.const 15))) (i32.const 1))))))))
    (local.get $count))

  ;; Walks the $n bytes at $data; returns how many it used. Stops at the end
  ;; of the bytes (status 0), after the int of length 0 that ends the block
  ;; (status 1), or at a length that is negative or over 1 GiB (status 2,
  ;; after its int). rowsNewlines() then says how many newlines it passed.
  (func (export "rowsWalk") (param $data i32) (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $k i32) (local $j i32) (local $count i32) (local $want i32) (local $byte i32)
    (local.set $p (local.get $data))
    (local.set $end (i32.add (local.get $data) (local.get $n)))
    (global.set $status (i32.const 0))
    (block $out
      (loop $next
        (br_if $out (i32.ge_u (local.get $p) (local.get $end)))
        (if (global.get $remaining)
          (then
            ;; the chunk's bytes, as many as are here
            (local.set $k (i32.sub (local.get $end) (local.get $p)))
            (if (i32.lt_u (global.get $remaining) (local.get $k)) (then (local.set $k (global.get $remaining))))
            (local.set $count (i32.add (local.get $count) (call $countNewlines (local.get $p) (local.get $k))))
            ;; a chunk as long as the trailer: compare it byte by byte (the trailer is at 1024)
            (if (i32.eq (global.get $chunkLength) (i32.const 5))
              (then
                (local.set $j (i32.const 0))
                (loop $compare
                  (if (i32.ne
                        (i32.load8_u (i32.add (local.get $p) (local.get $j)))
                        (i32.load8_u (i32.add (i32.const 1024) (i32.add (i32.sub (i32.const 5) (global.get $remaining)) (local.get $j)))))
                    (then (global.set $trailerSoFar (i32.const 0))))
                  (local.set $j (i32.add (local.get $j) (i32.const 1)))
                  (br_if $compare (i32.lt_u (local.get $j) (local.get $k))))))
            (local.set $p (i32.add (local.get $p) (local.get $k)))
            (global.set $remaining (i32.sub (global.get $remaining) (local.get $k)))
            (if (i32.eqz (global.get $remaining))
              (then (global.set $lastWasTrailer (global.get $trailerSoFar))))
            (br $next)))
        ;; an int: a sign byte and intSize bytes, least significant first, possibly split across buffers
        (local.set $want (i32.add (global.get $intSize) (i32.const 1)))
        (if (i32.and
              (i32.eqz (global.get $intHave))
              (i32.and (i32.eq (global.get $intSize) (i32.const 4)) (i32.le_u (i32.add (local.get $p) (i32.const 5)) (local.get $end))))
          (then
            ;; pg_dump's ints are 4 bytes: all five bytes here, read at once
            (global.set $intSign (i32.load8_u (local.get $p)))
            (global.set $intValue (i64.extend_i32_u (i32.load offset=1 align=1 (local.get $p))))
            (local.set $p (i32.add (local.get $p) (i32.const 5)))
            (global.set $intHave (local.get $want))))
        (if (i32.lt_u (global.get $intHave) (local.get $want)) (then
        (loop $bytes
          (local.set $byte (i32.load8_u (local.get $p)))
          (if (global.get $intHave)
            (then
              (global.set $intValue
                (i64.or (global.get $intValue)
                  (i64.shl (i64.extend_i32_u (local.get $byte)) (i64.extend_i32_u (i32.shl (i32.sub (global.get $intHave) (i32.const 1)) (i32.const 3)))))))
            (else
              (global.set $intSign (local.get $byte))
              (global.set $intValue (i64.const 0))))
          (global.set $intHave (i32.add (global.get $intHave) (i32.const 1)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br_if $bytes (i32.and
            (i32.lt_u (global.get $intHave) (local.get $want))
            (i32.lt_u (local.get $p) (local.get $end)))))))
        ;; the buffer ended inside the int: go on with the next one
        (br_if $out (i32.lt_u (global.get $intHave) (local.get $want)))
        (global.set $intHave (i32.const 0))
        ;; 0 (or -0): the end of the block
        (if (i64.eqz (global.get $intValue))
          (then
            (global.set $status (i32.const 1))
            (br $out)))
        (if (i32.or (global.get $intSign) (i64.gt_u (global.get $intValue) (i64.const 1073741824)))
          (then
            (global.set $status (i32.const 2))
            (br $out)))
        (global.set $remaining (i32.wrap_i64 (global.get $intValue)))
        (global.set $chunkLength (global.get $remaining))
        (global.set $trailerSoFar (i32.eq (global.get $remaining) (i32.const 5)))
        (br $next)))
    (global.set $newlines (local.get $count))
    (i32.sub (local.get $p) (local.get $data)))

  ;; ---------------------------------------------------------------------
  ;; The row copier: the hot loop of the restore's archive splitter
  ;; (archive-data-splitter.ts). In the $n bytes at $data, a loaded table's
  ;; chunks (4-byte ints only: a sign byte, then 4 bytes, least significant
  ;; first), it copies each chunk's bytes to $out (from $out + $fill, at most
  ;; to $out + $capacity) and counts their newlines. It takes only chunks that
  ;; lie wholly in the bytes and fit, and stops before any length it does not
  ;; take: 0 (the block's end), 5 (maybe the COPY trailer), negative, or over
  ;; 1 GiB; the caller's general path handles those. Returns how many bytes
  ;; it used; rowsCopied() is the new fill, rowsNewlines() the newlines.
  ;; ---------------------------------------------------------------------
  (global $copied (mut i32) (i32.const 0))
  (func (export "rowsCopied") (result i32) (global.get $copied))

  (func (export "rowsCopy") (param $data i32) (param $n i32) (param $out i32) (param $fill i32) (param $capacity i32) (result i32)
    (local $p i32) (local $end i32) (local $value i32) (local $count i32)
    (local.set $p (local.get $data))
    (local.set $end (i32.add (local.get $data) (local.get $n)))
    (block $out
      (loop $next
        (br_if $out (i32.gt_u (i32.add (local.get $p) (i32.const 5)) (local.get $end)))
        (br_if $out (i32.load8_u (local.get $p)))
        (local.set $value (i32.load offset=1 align=1 (local.get $p)))
        (br_if $out (i32.eqz (local.get $value)))
        (br_if $out (i32.eq (local.get $value) (i32.const 5)))
        (br_if $out (i32.gt_u (local.get $value) (i32.const 1073741824)))
        (br_if $out (i32.gt_u (i32.add (i32.add (local.get $p) (i32.const 5)) (local.get $value)) (local.get $end)))
        (br_if $out (i32.gt_u (i32.add (local.get $fill) (local.get $value)) (local.get $capacity)))
        (memory.copy (i32.add (local.get $out) (local.get $fill)) (i32.add (local.get $p) (i32.const 5)) (local.get $value))
        (local.set $count (i32.add (local.get $count) (call $countNewlines (i32.add (local.get $p) (i32.const 5)) (local.get $value))))
        (local.set $fill (i32.add (local.get $fill) (i32.sub (local.get $value) (i32.const 0))))
        (local.set $p (i32.add (i32.add (local.get $p) (i32.const 5)) (local.get $value)))
        (br $next)))
    (global.set $copied (local.get $fill))
    (global.set $newlines (local.get $count))
    (i32.sub (local.get $p) (local.get $data)))
)
