;; An app importing example:text/markup@0.1.0 and WASI's clocks, which
;; composition leaves as an import.
(component
  (import "example:text/markup@0.1.0" (instance $markup
    (export "render" (func (param "source" string) (result string)))
    (export "slugify" (func (param "title" string) (result string)))))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (export "now" (func (result u64)))))
  (core func $now (canon lower (func $clock "now")))
  (core module $m (import "clock" "now" (func (result i64))))
  (core instance (instantiate $m (with "clock" (instance (export "now" (func $now)))))))
