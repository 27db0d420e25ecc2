;; A library exporting example:text/markup@0.1.0: render takes a u32 where the app passes a string
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "render") (param i32) (result i32) unreachable)
    (func (export "slugify") (param i32 i32) (result i32) unreachable))
  (core instance $i (instantiate $m))
  (func $render (param "source" u32) (result string)
    (canon lift (core func $i "render") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $slugify (param "title" string) (result string)
    (canon lift (core func $i "slugify") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $markup (export "render" (func $render)) (export "slugify" (func $slugify)))
  (export "example:text/markup@0.1.0" (instance $markup)))
