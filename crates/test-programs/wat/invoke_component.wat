;; A component with functions for `tern run --invoke`, as if from this WIT:
;;
;;   package example:calc;
;;   interface ops { mul: func(a: u32, b: u32) -> u32; neg: func(x: s32) -> s32; }
;;   interface wide { neg: func(x: s64) -> s64; }
;;   world invoke-component {
;;     record point { x: s32, y: s32 }
;;     export add: func(a: u32, b: u32) -> u32;
;;     export is-even: func(n: u32) -> bool;
;;     export greet: func(name: string) -> string;
;;     export swap: func(p: point) -> point;
;;     export nothing: func();
;;     export boom: func();
;;     export spin: func();
;;     export echo: func(data: list<u8>) -> list<u8>;
;;     export ops;
;;     export wide;
;;   }
;;
;; `neg` is in two interfaces, so only its qualified names find it.
(component
  (core module $m
    (memory (export "memory") 1)
    ;; 0..8: greet's result (pointer, length); 8..16: swap's result;
    ;; 32..40: echo's result.
    (data (i32.const 16) "hello, ")
    ;; Allocations start here and are never freed.
    (global $heap (mut i32) (i32.const 1024))

    (func (export "add") (param i32 i32) (result i32)
      (i32.add (local.get 0) (local.get 1)))
    (func (export "mul") (param i32 i32) (result i32)
      (i32.mul (local.get 0) (local.get 1)))
    (func (export "neg32") (param i32) (result i32)
      (i32.sub (i32.const 0) (local.get 0)))
    (func (export "neg64") (param i64) (result i64)
      (i64.sub (i64.const 0) (local.get 0)))
    (func (export "is-even") (param i32) (result i32)
      (i32.eqz (i32.and (local.get 0) (i32.const 1))))
    (func (export "nothing"))
    (func (export "boom") unreachable)
    (func (export "spin") (loop $forever (br $forever)))

    ;; cabi_realloc(old pointer, old size, align, new size): a bump allocator,
    ;; growing the memory as it needs to (a trap when it cannot).
    (func $realloc (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local $end i32)
      ;; Round the heap pointer up to `align`, a power of two.
      (local.set $at
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (local.set $end (i32.add (local.get $at) (local.get 3)))
      (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.sub
                    (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                    (memory.size)))
                (i32.const -1))
            (then unreachable))))
      (global.set $heap (local.get $end))
      (local.get $at))

    ;; "hello, " followed by the name.
    (func (export "greet") (param $name i32) (param $len i32) (result i32)
      (local $out i32)
      (local.set $out
        (call $realloc (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.add (i32.const 7) (local.get $len))))
      (memory.copy (local.get $out) (i32.const 16) (i32.const 7))
      (memory.copy
        (i32.add (local.get $out) (i32.const 7)) (local.get $name) (local.get $len))
      (i32.store (i32.const 0) (local.get $out))
      (i32.store (i32.const 4) (i32.add (i32.const 7) (local.get $len)))
      (i32.const 0))

    ;; The bytes it was given.
    (func (export "echo") (param $data i32) (param $len i32) (result i32)
      (i32.store (i32.const 32) (local.get $data))
      (i32.store (i32.const 36) (local.get $len))
      (i32.const 32))

    ;; The point with x and y exchanged.
    (func (export "swap") (param $x i32) (param $y i32) (result i32)
      (i32.store (i32.const 8) (local.get $y))
      (i32.store (i32.const 12) (local.get $x))
      (i32.const 8)))

  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $memory))
  (alias core export $i "realloc" (core func $realloc))

  (type $point-def (record (field "x" s32) (field "y" s32)))
  (export $point "point" (type $point-def))

  (func $add (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func $is-even (param "n" u32) (result bool)
    (canon lift (core func $i "is-even")))
  (func $greet (param "name" string) (result string)
    (canon lift (core func $i "greet") (memory $memory) (realloc $realloc)))
  (func $swap (param "p" $point) (result $point)
    (canon lift (core func $i "swap") (memory $memory)))
  (func $echo (param "data" (list u8)) (result (list u8))
    (canon lift (core func $i "echo") (memory $memory) (realloc $realloc)))
  (func $nothing (canon lift (core func $i "nothing")))
  (func $boom (canon lift (core func $i "boom")))
  (func $spin (canon lift (core func $i "spin")))
  (func $mul (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "mul")))
  (func $neg32 (param "x" s32) (result s32)
    (canon lift (core func $i "neg32")))
  (func $neg64 (param "x" s64) (result s64)
    (canon lift (core func $i "neg64")))

  (export "add" (func $add))
  (export "is-even" (func $is-even))
  (export "greet" (func $greet))
  (export "swap" (func $swap))
  (export "nothing" (func $nothing))
  (export "boom" (func $boom))
  (export "spin" (func $spin))
  (export "echo" (func $echo))
  (instance $ops
    (export "mul" (func $mul))
    (export "neg" (func $neg32)))
  (export "example:calc/ops" (instance $ops))
  (instance $wide
    (export "neg" (func $neg64)))
  (export "example:calc/wide" (instance $wide)))
