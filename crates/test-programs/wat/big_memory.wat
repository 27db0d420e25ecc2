;; A module that asks for 2000 pages (125 MiB) of memory before it runs.
(module
  (memory (export "memory") 2000)
  (func (export "_start")))
