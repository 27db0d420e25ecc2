;; Reads far past the end of its one page of memory, three named frames deep.
(module
  (memory 1)
  (func $load_past_end (result i32)
    i32.const 0x7fff_0000
    i32.load)
  (func $middle (result i32)
    call $load_past_end)
  (func $start (export "_start")
    call $middle
    drop))
