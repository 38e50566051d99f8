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
)
