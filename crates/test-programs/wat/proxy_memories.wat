;; A proxy-wasm filter with five memories. On each request's headers it
;; grows four of them by 5 MiB (80 pages) each, and traps if a grow is
;; refused: under a 16 MiB limit for the whole filter, the fourth is.
(module
  (memory (export "memory") 1)
  (memory $a 0)
  (memory $b 0)
  (memory $c 0)
  (memory $d 0)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.lt_s (memory.grow $a (i32.const 80)) (i32.const 0)) (then unreachable))
    (if (i32.lt_s (memory.grow $b (i32.const 80)) (i32.const 0)) (then unreachable))
    (if (i32.lt_s (memory.grow $c (i32.const 80)) (i32.const 0)) (then unreachable))
    (if (i32.lt_s (memory.grow $d (i32.const 80)) (i32.const 0)) (then unreachable))
    (i32.const 0)))
