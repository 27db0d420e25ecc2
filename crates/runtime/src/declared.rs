//! What a wasm binary declares, read from its bytes without compiling it:
//! enough to refuse a program whose memory cannot fit its limit before
//! spending seconds compiling it.

/// What a binary declares that decides how it is loaded, before its code
/// is: whether it speaks WASI 0.3 ([`speaks_wasi_p3`]), the memory it
/// needs to start ([`initial_memory`]) and whether its instances answer
/// one request each ([`one_request_per_instance`]). The compile cache's
/// stat index keeps these beside a file's content hash, so a load that
/// finds its code there never reads the module
/// ([`crate::Loader::declared`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declared {
    /// It imports or exports a WASI 0.3 interface.
    pub wasi_p3: bool,
    /// The linear memory it needs to start, in bytes; `None` when the
    /// bytes could not be read as wasm.
    pub initial_memory: Option<u64>,
    /// Its instances cannot answer a second request.
    pub one_request_per_instance: bool,
}

impl Declared {
    /// Reads all three from `bytes`, a binary or WAT text (read as the
    /// binary it stands for).
    pub fn of(bytes: &[u8]) -> Declared {
        let text = (!bytes.starts_with(b"\0asm"))
            .then(|| std::str::from_utf8(bytes).ok())
            .flatten()
            .filter(|text| looks_like_wat(text))
            .and_then(|text| wat::parse_str(text).ok());
        let binary = text.as_deref().unwrap_or(bytes);
        Declared {
            wasi_p3: speaks_wasi_p3(binary),
            initial_memory: initial_memory(binary),
            one_request_per_instance: one_request_per_instance(binary),
        }
    }

    /// A fixed-size encoding for the stat index: a flag byte (bit 0: WASI
    /// 0.3; bit 1: the memory is known; bit 2: one request per instance),
    /// then the memory.
    pub(crate) fn to_bytes(self) -> [u8; 9] {
        let mut bytes = [0; 9];
        bytes[0] = u8::from(self.wasi_p3)
            | (u8::from(self.initial_memory.is_some()) << 1)
            | (u8::from(self.one_request_per_instance) << 2);
        bytes[1..].copy_from_slice(&self.initial_memory.unwrap_or(0).to_le_bytes());
        bytes
    }

    pub(crate) fn from_bytes(bytes: &[u8; 9]) -> Option<Declared> {
        let flags = bytes[0];
        if flags > 0b111 {
            return None;
        }
        let memory = u64::from_le_bytes(bytes[1..].try_into().ok()?);
        Some(Declared {
            wasi_p3: flags & 1 != 0,
            initial_memory: (flags & 2 != 0).then_some(memory),
            one_request_per_instance: flags & 4 != 0,
        })
    }
}

/// The linear memory a core module or component asks for before it runs:
/// the initial sizes of the memories its core modules define, added up
/// (an imported memory is defined by another module of the same component,
/// and counted there), in bytes. WAT text is read as the binary it
/// stands for. `None` when `bytes` is neither a wasm binary nor WAT this
/// can read (a sealed artifact, a truncated or malformed binary): loading
/// it then says what is wrong.
///
/// ```
/// let module = wat::parse_str("(module (memory 2000) (memory 1))").unwrap();
/// assert_eq!(tern_runtime::initial_memory(&module), Some(2001 << 16));
/// ```
pub fn initial_memory(bytes: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    if bytes.starts_with(b"\0asm") {
        add_binary(bytes, &mut total, 0)?;
    } else {
        let wasm = wat::parse_str(std::str::from_utf8(bytes).ok()?).ok()?;
        add_binary(&wasm, &mut total, 0)?;
    }
    Some(total)
}

/// Whether a component speaks WASI 0.3: it imports or exports a `wasi:`
/// interface of version 0.3 (`wasi:http/handler@0.3.0`,
/// `wasi:cli/stdout@0.3.0`) or one of the Spin SDK 7's `spin:` interfaces
/// of version 3 (async functions too), so its engine needs component-model
/// concurrency (async functions, streams, futures). `false` for a core
/// module, and for bytes that are not a readable component (loading them
/// says what is wrong). Only the top level is read, not nested modules.
///
/// ```
/// let p3 = wat::parse_str(
///     r#"(component (import "wasi:clocks/monotonic-clock@0.3.0" (instance)))"#,
/// ).unwrap();
/// assert!(tern_runtime::speaks_wasi_p3(&p3));
/// let p2 = wat::parse_str(
///     r#"(component (import "wasi:clocks/monotonic-clock@0.2.6" (instance)))"#,
/// ).unwrap();
/// assert!(!tern_runtime::speaks_wasi_p3(&p2));
/// ```
pub fn speaks_wasi_p3(bytes: &[u8]) -> bool {
    use wasmparser::Payload;
    // The Spin SDK 7's `spin:*@3` interfaces are WASI 0.3 async functions
    // too; a Redis-triggered component may use nothing else.
    let is_p3 = |name: &str| {
        (name.starts_with("wasi:") && name.contains("@0.3."))
            || (name.starts_with("spin:") && name.contains("@3."))
    };
    let mut p3 = false;
    top_level(bytes, |payload| {
        p3 = match payload {
            Payload::ComponentImportSection(imports) => {
                imports.into_iter().flatten().any(|i| is_p3(i.name.name))
            }
            Payload::ComponentExportSection(exports) => {
                exports.into_iter().flatten().any(|e| is_p3(e.name.name))
            }
            _ => false,
        };
        !p3
    });
    p3
}

/// Whether a component was made by a toolchain whose instances answer one
/// request each, so that it cannot be kept warm: ComponentizeJS (`jco
/// componentize`), whose StarlingMonkey engine keeps the first request's
/// `FetchEvent` and throws on the second `respondWith` (StarlingMonkey
/// issue #247, open as of ComponentizeJS 0.23.0). Read from the outer
/// component's `producers` section; `false` for anything else. Every
/// version is included, and so is a handler exporting `wasi:http` itself
/// rather than listening for `fetch` (which #247 spares): the binary does
/// not tell the two apart. Give the check a version once #247 is fixed.
///
/// ```
/// let js = wat::parse_str(
///     r#"(component (@producers (processed-by "ComponentizeJS" "0.22.0")))"#,
/// ).unwrap();
/// assert!(tern_runtime::one_request_per_instance(&js));
/// let rust = wat::parse_str(r#"(component (@producers (processed-by "rustc" "1.95.0")))"#)
///     .unwrap();
/// assert!(!tern_runtime::one_request_per_instance(&rust));
/// ```
pub fn one_request_per_instance(bytes: &[u8]) -> bool {
    use wasmparser::{KnownCustom, Payload};
    let mut found = false;
    top_level(bytes, |payload| {
        if let Payload::CustomSection(section) = payload
            && let KnownCustom::Producers(fields) = section.as_known()
        {
            found = fields.into_iter().flatten().any(|field| {
                field.name == "processed-by" && { field.values.into_iter().flatten() }
                    .any(|v| v.name == "ComponentizeJS")
            });
        }
        !found
    });
    found
}

/// Calls `visit` with each section of the outer component of `bytes` until
/// it returns `false`. Nested modules and components (nearly all of the
/// bytes: code, data) are skipped whole, as is a core module's code: a
/// first load reads this before its code, and the stat index then keeps
/// the answers. Stops early on bytes that are not a readable binary.
fn top_level(bytes: &[u8], mut visit: impl FnMut(wasmparser::Payload<'_>) -> bool) {
    use wasmparser::{Chunk, Parser, Payload};
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    loop {
        let Ok(Chunk::Parsed { consumed, payload }) = parser.parse(rest, true) else {
            return;
        };
        let Some(after) = rest.get(consumed..) else {
            return;
        };
        rest = after;
        let skip = match &payload {
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => Some(unchecked_range.len()),
            Payload::CodeSectionStart { size, .. } => {
                parser.skip_section();
                Some(usize::try_from(*size).unwrap_or(usize::MAX))
            }
            Payload::End(_) => return,
            _ => None,
        };
        if let Some(len) = skip {
            match rest.get(len..) {
                Some(after) => rest = after,
                None => return,
            }
        }
        if !visit(payload) {
            return;
        }
    }
}

/// Whether `text` may be WebAssembly text: after whitespace and `;;`
/// comments it starts with `(` (a module, its fields, or a `(; ... ;)`
/// comment). Anything else (a script, a README, an empty file) is not.
pub(crate) fn looks_like_wat(text: &str) -> bool {
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
    loop {
        rest = rest.trim_start();
        match rest.strip_prefix(";;") {
            Some(comment) => rest = comment.split_once('\n').map_or("", |(_, next)| next),
            None => return rest.starts_with('('),
        }
    }
}

/// Components nest; real ones a few levels deep. Past this the binary is
/// left for the compiler to judge.
const MAX_DEPTH: u32 = 16;

/// Section ids.
const MODULE_MEMORY: u8 = 5;
const COMPONENT_CORE_MODULE: u8 = 1;
const COMPONENT_COMPONENT: u8 = 4;

/// Adds the memories a module or component defines to `total`.
fn add_binary(bytes: &[u8], total: &mut u64, depth: u32) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (header, sections) = bytes.split_at_checked(8)?;
    let component = match header {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => false,
        [0, b'a', b's', b'm', _, _, 1, 0] => true,
        _ => return None,
    };
    let mut reader = Reader(sections);
    while !reader.0.is_empty() {
        let id = reader.byte()?;
        let size = usize::try_from(reader.leb()?).ok()?;
        let payload = reader.take(size)?;
        match (component, id) {
            (false, MODULE_MEMORY) => add_memories(payload, total)?,
            (true, COMPONENT_CORE_MODULE | COMPONENT_COMPONENT) => {
                add_binary(payload, total, depth + 1)?
            }
            _ => {}
        }
    }
    Some(())
}

/// Adds the initial sizes in a module's memory section to `total`.
fn add_memories(section: &[u8], total: &mut u64) -> Option<()> {
    let mut reader = Reader(section);
    for _ in 0..reader.leb()? {
        // Limits flags: 1 a maximum follows, 2 shared, 4 memory64,
        // 8 a custom page size follows.
        let flags = reader.byte()?;
        if flags & !0b1111 != 0 {
            return None;
        }
        let initial = reader.leb()?;
        if flags & 0b0001 != 0 {
            reader.leb()?;
        }
        let page_size_log2 = if flags & 0b1000 != 0 {
            u32::try_from(reader.leb()?).ok().filter(|&n| n < 64)?
        } else {
            16
        };
        let bytes = initial.saturating_mul(1u64 << page_size_log2);
        *total = total.saturating_add(bytes);
    }
    Some(())
}

/// A cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// An unsigned LEB128 number of up to 64 bits.
    fn leb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn modules_add_up_their_defined_memories() {
        assert_eq!(initial_memory(&wat("(module)")), Some(0));
        assert_eq!(
            initial_memory(&wat("(module (memory 2000))")),
            Some(125 << 20)
        );
        // A maximum, a 64-bit memory and a second memory.
        assert_eq!(
            initial_memory(&wat("(module (memory 3 10) (memory i64 2))")),
            Some(5 << 16)
        );
        // An imported memory is not this module's to count.
        assert_eq!(
            initial_memory(&wat(
                r#"(module (import "env" "m" (memory 50)) (memory 1))"#
            )),
            Some(1 << 16)
        );
    }

    #[test]
    fn components_add_up_their_core_modules_at_any_depth() {
        let component = wat(r#"
            (component
              (core module $a (memory 17))
              (core module $b (import "a" "m" (memory 17)) (memory 2))
              (component $inner
                (core module $c (memory 100))))
        "#);
        assert_eq!(initial_memory(&component), Some(119 << 16));
    }

    #[test]
    fn text_is_read_as_the_binary_it_stands_for() {
        assert_eq!(initial_memory(b"(module (memory 3))"), Some(3 << 16));
    }

    #[test]
    fn text_that_does_not_open_with_a_parenthesis_is_not_wat() {
        for wat in [
            "(module)",
            "  \n\t(module)",
            ";; a comment\n  ;; another\n(module)",
            "(; a block comment ;) (module)",
            "\u{feff}(module)",
            "(func)",
        ] {
            assert!(looks_like_wat(wat), "{wat:?}");
        }
        for text in [
            "",
            "  \n",
            ";; only a comment",
            "#!/bin/sh\necho hi\n",
            "hello (world)",
        ] {
            assert!(!looks_like_wat(text), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_a_readable_binary_is_left_to_the_loader() {
        assert_eq!(initial_memory(b"(module (memory"), None);
        assert_eq!(initial_memory(b"plain text"), None);
        assert_eq!(initial_memory(&[0xff, 0xfe, 0]), None);
        assert_eq!(initial_memory(b"\0asm\x01\0"), None);
        let mut truncated = wat("(module (memory 2000))");
        truncated.truncate(truncated.len() - 1);
        assert_eq!(initial_memory(&truncated), None);
    }
}
