;; Calls WASI preview 1 proc_exit(7) from text format.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    i32.const 7
    call $proc_exit))
