//! A hostile guest: calls the `wasi_ephemeral_nn` imports directly, with
//! pointers and lengths that point outside its memory or overflow when
//! multiplied by an element size, with ids it never got, and with enum
//! values out of range. Prints one line per call, `CALL: errno N` (0 for
//! success), then `still running`, and exits 0: every call must come back
//! with an error code, never a trap.
//!
//! Usage: `nn_bad_pointers [MODEL]`. MODEL (`default` unless given) names a
//! preloaded GGML model; the calls that need a real graph or context use
//! it, and read output 1 (the token counts), which a GGML context has
//! before any compute. The two calls that make a graph and a context are
//! meant to succeed (errno 0), the rest to fail.
//!
//! `END` in the call names is the end of linear memory (its size in bytes
//! when the program starts).

/// The imports as the `wasmedge-wasi-nn` crate declares them (its
/// `generated.rs`): every argument an `i32`, the result an errno.
mod raw {
    #[link(wasm_import_module = "wasi_ephemeral_nn")]
    unsafe extern "C" {
        pub fn load(
            builders: i32,
            builders_len: i32,
            encoding: i32,
            target: i32,
            graph: i32,
        ) -> i32;
        pub fn load_by_name(name: i32, name_len: i32, graph: i32) -> i32;
        pub fn load_by_name_with_config(
            name: i32,
            name_len: i32,
            config: i32,
            config_len: i32,
            graph: i32,
        ) -> i32;
        pub fn init_execution_context(graph: i32, context: i32) -> i32;
        pub fn set_input(context: i32, index: i32, tensor: i32) -> i32;
        pub fn get_output(context: i32, index: i32, out: i32, out_max: i32, size: i32) -> i32;
        pub fn get_output_single(
            context: i32,
            index: i32,
            out: i32,
            out_max: i32,
            size: i32,
        ) -> i32;
        pub fn compute(context: i32) -> i32;
        pub fn compute_single(context: i32) -> i32;
        pub fn fini_single(context: i32) -> i32;
        pub fn unload(graph: i32) -> i32;
    }
}

/// The layout of the ABI's `tensor` on wasm32 (the crate's `Tensor`): the
/// dimensions as (pointer, length) of `u32`s, the type, the data as
/// (pointer, length) of bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tensor {
    dims: u32,
    dims_len: u32,
    ty: u32,
    data: u32,
    data_len: u32,
}

/// The layout of one `graph_builder`: a (pointer, length) of bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Builder {
    data: u32,
    len: u32,
}

/// `tensor-type` `u8`.
const U8: u32 = 3;
/// `graph-encoding` `ggml`.
const GGML: i32 = 6;
/// `execution-target` `cpu`.
const CPU: i32 = 0;
/// A graph or context id no call ever returned.
const UNKNOWN_ID: i32 = 0x0dea_dbee;
/// An address near the top of the 32-bit address space, far past memory.
const FAR: u32 = 0xFFFF_FFF0;

/// The address of `value`, as the ABI passes it.
fn addr<T: ?Sized>(value: &T) -> u32 {
    value as *const T as *const u8 as u32
}

/// The address of `slot`, for the host to write a result into.
fn out_addr<T: ?Sized>(slot: &mut T) -> u32 {
    slot as *mut T as *mut u8 as u32
}

fn report(call: &str, errno: i32) {
    println!("{call}: errno {errno}");
}

fn main() {
    let model = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let end = (core::arch::wasm32::memory_size::<0>() * 65536) as u32;
    let name = model.as_bytes();
    // Where the calls meant to fail would write their results.
    let mut slot = 0u32;
    let slot_at = out_addr(&mut slot);

    // SAFETY (every call below): the host reads and writes only through
    // the addresses passed, and must refuse the ones outside memory; the
    // valid ones point at live locals.
    unsafe {
        report(
            "load_by_name(name=FAR, len=100)",
            raw::load_by_name(FAR as i32, 100, slot_at as i32),
        );
        report(
            "load_by_name(name=END-3, len=4)",
            raw::load_by_name((end - 3) as i32, 4, slot_at as i32),
        );
        report(
            "load_by_name(len=0x7fffffff)",
            raw::load_by_name(addr(name) as i32, 0x7FFF_FFFF, slot_at as i32),
        );
        report(
            "load_by_name(graph=END-2)",
            raw::load_by_name(addr(name) as i32, name.len() as i32, (end - 2) as i32),
        );
        report(
            "load_by_name_with_config(config=FAR, len=16)",
            raw::load_by_name_with_config(
                addr(name) as i32,
                name.len() as i32,
                FAR as i32,
                16,
                slot_at as i32,
            ),
        );

        let junk = [0u8; 16];
        let builders = [Builder {
            data: addr(&junk),
            len: junk.len() as u32,
        }];
        report(
            "load(builders_len=0x40000000)",
            raw::load(
                addr(&builders) as i32,
                0x4000_0000,
                GGML,
                CPU,
                slot_at as i32,
            ),
        );
        report(
            "load(builders=FAR, len=1)",
            raw::load(FAR as i32, 1, GGML, CPU, slot_at as i32),
        );
        let far_builder = [Builder { data: FAR, len: 64 }];
        report(
            "load(builder data=FAR, len=64)",
            raw::load(addr(&far_builder) as i32, 1, GGML, CPU, slot_at as i32),
        );
        let huge_builder = [Builder {
            data: addr(&junk),
            len: 0xFFFF_FFFF,
        }];
        report(
            "load(builder len=0xffffffff)",
            raw::load(addr(&huge_builder) as i32, 1, GGML, CPU, slot_at as i32),
        );
        report(
            "load(encoding=255)",
            raw::load(addr(&builders) as i32, 1, 255, CPU, slot_at as i32),
        );
        report(
            "load(target=255)",
            raw::load(addr(&builders) as i32, 1, GGML, 255, slot_at as i32),
        );

        // A real graph and context for the calls that need them.
        let mut graph = 0u32;
        report(
            &format!("load_by_name({model})"),
            raw::load_by_name(
                addr(name) as i32,
                name.len() as i32,
                out_addr(&mut graph) as i32,
            ),
        );
        let graph_id = graph as i32;
        report(
            "init_execution_context(context=FAR)",
            raw::init_execution_context(graph_id, FAR as i32),
        );
        report(
            "init_execution_context(context=END-2)",
            raw::init_execution_context(graph_id, (end - 2) as i32),
        );
        let mut context = 0u32;
        report(
            "init_execution_context(graph=UNKNOWN)",
            raw::init_execution_context(UNKNOWN_ID, out_addr(&mut context) as i32),
        );
        report(
            "init_execution_context",
            raw::init_execution_context(graph_id, out_addr(&mut context) as i32),
        );
        let context_id = context as i32;

        let dims = [1u32];
        let prompt = *b"Hello";
        let good = Tensor {
            dims: addr(&dims),
            dims_len: 1,
            ty: U8,
            data: addr(&prompt),
            data_len: prompt.len() as u32,
        };
        report(
            "set_input(tensor=FAR)",
            raw::set_input(context_id, 0, FAR as i32),
        );
        report(
            "set_input(tensor=END-8)",
            raw::set_input(context_id, 0, (end - 8) as i32),
        );
        // Readable, but a rank no model takes.
        let nine = [1u32; 9];
        let bad_tensors = [
            ("dims=FAR", Tensor { dims: FAR, ..good }),
            (
                "dims_len=9",
                Tensor {
                    dims: addr(&nine),
                    dims_len: 9,
                    ..good
                },
            ),
            (
                "dims_len=0x40000000",
                Tensor {
                    dims_len: 0x4000_0000,
                    ..good
                },
            ),
            ("data=FAR", Tensor { data: FAR, ..good }),
            (
                "data=END-2, len=5",
                Tensor {
                    data: end - 2,
                    ..good
                },
            ),
            (
                "data_len=0xffffffff",
                Tensor {
                    data_len: 0xFFFF_FFFF,
                    ..good
                },
            ),
            ("type=200", Tensor { ty: 200, ..good }),
        ];
        for (what, tensor) in &bad_tensors {
            let tensor = *tensor;
            report(
                &format!("set_input({what})"),
                raw::set_input(context_id, 0, addr(&tensor) as i32),
            );
        }
        report(
            "set_input(context=UNKNOWN)",
            raw::set_input(UNKNOWN_ID, 0, addr(&good) as i32),
        );

        let mut out = [0u8; 64];
        let out_at = out_addr(&mut out) as i32;
        for (call, get) in [
            (
                "get_output",
                raw::get_output as unsafe extern "C" fn(_, _, _, _, _) -> _,
            ),
            ("get_output_single", raw::get_output_single),
        ] {
            report(
                &format!("{call}(out=FAR, max=64)"),
                get(context_id, 1, FAR as i32, 64, slot_at as i32),
            );
            report(
                &format!("{call}(out=END-8, max=64)"),
                get(context_id, 1, (end - 8) as i32, 64, slot_at as i32),
            );
            report(
                &format!("{call}(max=0x7fffffff)"),
                get(context_id, 1, out_at, 0x7FFF_FFFF, slot_at as i32),
            );
            report(
                &format!("{call}(size=END-2)"),
                get(context_id, 1, out_at, 64, (end - 2) as i32),
            );
            report(
                &format!("{call}(context=UNKNOWN)"),
                get(UNKNOWN_ID, 1, out_at, 64, slot_at as i32),
            );
        }

        report("compute(context=UNKNOWN)", raw::compute(UNKNOWN_ID));
        report(
            "compute_single(context=UNKNOWN)",
            raw::compute_single(UNKNOWN_ID),
        );
        report("fini_single(context=UNKNOWN)", raw::fini_single(UNKNOWN_ID));
        report("unload(graph=UNKNOWN)", raw::unload(UNKNOWN_ID));
    }
    println!("still running");
}
