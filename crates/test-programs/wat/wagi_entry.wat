;; A WAGI program whose entry point is `serve`, not `_start` (Spin's
;; `executor = { type = "wagi", entrypoint = "serve" }`): it prints a CGI
;; response naming the function that ran.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; The iovec at 0 points at the text at 16; fd_write writes its count at 8.
  (data (i32.const 16) "Content-Type: text/plain\n\nran: serve\n")
  (func $write (param $len i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "serve")
    (call $write (i32.const 37)))
  (func (export "_start")
    (unreachable)))
