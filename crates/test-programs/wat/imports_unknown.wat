;; A command importing an interface Tern does not provide: `tern run` must
;; name the interface and function, and say how to provide it.
(component
  (import "example:text/markup@0.1.0" (instance $markup
    (export "render" (func (param "source" string) (result string)))))
  (core module $m (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
