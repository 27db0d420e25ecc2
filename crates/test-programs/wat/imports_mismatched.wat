;; A command importing wasi:cli/environment with the wrong types: `tern run`
;; must name the interface, the function and the difference.
(component
  (import "wasi:cli/environment@0.2.0" (instance $markup
    (export "get-arguments" (func (result u32)))))
  (core module $m (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
