;; Exports for `tern run --invoke`: integer and float arithmetic, and a trap.
(module
  (func (export "add") (param i32 i32) (result i32)
    local.get 0
    local.get 1
    i32.add)
  (func (export "mul64") (param i64 i64) (result i64)
    local.get 0
    local.get 1
    i64.mul)
  (func (export "hypot") (param f64 f64) (result f64)
    local.get 0
    local.get 0
    f64.mul
    local.get 1
    local.get 1
    f64.mul
    f64.add
    f64.sqrt)
  (func (export "divmod") (param i32 i32) (result i32 i32)
    local.get 0
    local.get 1
    i32.div_u
    local.get 0
    local.get 1
    i32.rem_u)
  (func (export "nothing"))
  (func (export "boom") unreachable))
