;; A valid component that exports nothing, so it is not a wasi:cli command.
(component
  (core module $m (func (export "f")))
  (core instance (instantiate $m)))
