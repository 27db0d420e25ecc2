;; A library exporting an interface nobody imports.
(component
  (instance $empty)
  (export "example:other/thing@0.1.0" (instance $empty)))
