//! WasmEdge's preview 1 `wasi_ephemeral_nn` functions, for core modules:
//! the standard ones (`load`, `init_execution_context`, `set_input`,
//! `compute`, `get_output`) and the superset WasmEdge's GGML guests call
//! (`load_by_name`, `load_by_name_with_config`, `compute_single`,
//! `get_output_single`, `fini_single`, `unload`), with its error numbers
//! (`tern_nn::Error::errno`).
//!
//! Every pointer and length a guest passes is checked against its memory
//! before use: a bad one is error 1 (invalid argument), never a trap or a
//! host panic. Handles are indexes into this instance's own tables; one
//! that was never made, or was unloaded, is error 8 (not found).

use tern_nn::{Cancel, Context, Encoding, Id, Limits, Model, Tensor, TensorType};
use wasmtime::{Caller, Extern, Linker, Result};

use super::{Held, MAX_OPEN, Nn, off_thread};

const MODULE: &str = "wasi_ephemeral_nn";
const SUCCESS: i32 = 0;
const MISSING_MEMORY: i32 = 3;

/// One instance's WASI-NN state.
#[derive(Default)]
pub struct NnP1 {
    nn: Nn,
    graphs: Vec<Option<P1Graph>>,
    contexts: Vec<Option<P1Context>>,
    cancel: Cancel,
}

struct P1Graph {
    model: Model,
    limits: Limits,
    config: Vec<u8>,
    /// The budget its model holds (one the guest loaded itself).
    held: Held,
}

struct P1Context {
    /// `None` while a compute has it on the blocking pool.
    cx: Option<Context>,
    /// Its graph's model's share of the budget, for as long as the
    /// instance lives (contexts are never dropped).
    _held: Held,
}

impl NnP1 {
    /// The state of an instance that may use what `nn` grants.
    pub fn new(nn: Nn) -> NnP1 {
        NnP1 {
            nn,
            ..NnP1::default()
        }
    }

    fn open(&self) -> usize {
        self.graphs.iter().filter(|g| g.is_some()).count()
            + self.contexts.iter().filter(|c| c.is_some()).count()
    }

    fn add_graph(&mut self, graph: P1Graph) -> Result<u32, tern_nn::Error> {
        if self.open() >= MAX_OPEN as usize {
            return Err(too_many());
        }
        // An unloaded graph's slot is taken again, so a guest loading and
        // unloading in a loop does not grow the table.
        match self.graphs.iter().position(Option::is_none) {
            Some(free) => {
                self.graphs[free] = Some(graph);
                Ok(free as u32)
            }
            None => {
                self.graphs.push(Some(graph));
                Ok(self.graphs.len() as u32 - 1)
            }
        }
    }

    fn graph(&self, id: u32) -> Result<&P1Graph, tern_nn::Error> {
        self.graphs
            .get(id as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| tern_nn::Error::NotFound(format!("no graph {id}")))
    }

    fn context(&mut self, id: u32) -> Result<&mut Context, tern_nn::Error> {
        match self.contexts.get_mut(id as usize).and_then(Option::as_mut) {
            Some(P1Context { cx: Some(cx), .. }) => Ok(cx),
            Some(P1Context { cx: None, .. }) => Err(tern_nn::Error::RuntimeError(format!(
                "execution context {id} is already computing"
            ))),
            None => Err(tern_nn::Error::NotFound(format!(
                "no execution context {id}"
            ))),
        }
    }
}

fn too_many() -> tern_nn::Error {
    tern_nn::Error::TooLarge(format!("more than {MAX_OPEN} wasi-nn objects open at once"))
}

/// The guest's memory as bytes, or `None` if it exports none.
fn memory<'a, T>(caller: &'a mut Caller<'_, T>) -> Option<(&'a mut [u8], &'a mut T)> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    Some(memory.data_and_store_mut(caller))
}

/// `len` bytes at `ptr`, if they lie inside `mem`.
fn slice(mem: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    mem.get(start..end)
}

fn read_u32(mem: &[u8], ptr: usize) -> Option<u32> {
    let bytes = mem.get(ptr..ptr.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn write_u32(mem: &mut [u8], ptr: i32, value: u32) -> Option<()> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(4)?)?
        .copy_from_slice(&value.to_le_bytes());
    Some(())
}

fn invalid(what: &str) -> tern_nn::Error {
    tern_nn::Error::InvalidArgument(format!("{what} lies outside the guest's memory"))
}

/// What a call returns to the guest: 0, or the error's number.
fn errno(result: Result<(), tern_nn::Error>) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(err) => err.errno() as i32,
    }
}

/// A tensor struct (`{dims: (ptr, len), type: u8, data: (ptr, len)}`, 20
/// bytes) at `ptr`, copied out of the guest's memory.
fn read_tensor(mem: &[u8], ptr: i32) -> Result<Tensor, tern_nn::Error> {
    let at = ptr as u32 as usize;
    let field = |offset: usize| at.checked_add(offset).and_then(|p| read_u32(mem, p));
    let (Some(dims_ptr), Some(dims_len), Some(ty), Some(data_ptr), Some(data_len)) =
        (field(0), field(4), field(8), field(12), field(16))
    else {
        return Err(invalid("the tensor"));
    };
    let ty = match ty & 0xff {
        0 => TensorType::Fp16,
        1 => TensorType::Fp32,
        2 => TensorType::Fp64,
        3 => TensorType::U8,
        4 => TensorType::I32,
        5 => TensorType::I64,
        other => {
            return Err(tern_nn::Error::InvalidArgument(format!(
                "unknown tensor type {other}"
            )));
        }
    };
    if dims_len as usize > super::MAX_RANK {
        return Err(tern_nn::Error::InvalidArgument(format!(
            "a tensor of {dims_len} dimensions: at most {}",
            super::MAX_RANK
        )));
    }
    let dims_bytes = dims_len
        .checked_mul(4)
        .ok_or_else(|| invalid("the tensor's dimensions"))?;
    let dims = slice(mem, dims_ptr as i32, dims_bytes as i32)
        .ok_or_else(|| invalid("the tensor's dimensions"))?;
    let dimensions = dims
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let data =
        slice(mem, data_ptr as i32, data_len as i32).ok_or_else(|| invalid("the tensor's data"))?;
    Ok(Tensor::new(dimensions, ty, data.to_vec()))
}

/// Adds the `wasi_ephemeral_nn` functions to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut NnP1,
) -> Result<()> {
    linker.func_wrap(
        MODULE,
        "load",
        move |mut caller: Caller<'_, T>,
              builders: i32,
              count: i32,
              encoding: i32,
              target: i32,
              out: i32|
              -> i32 {
            let Some((mem, data)) = memory(&mut caller) else {
                return MISSING_MEMORY;
            };
            errno(load(mem, get(data), builders, count, encoding, target, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "load_by_name",
        move |mut caller: Caller<'_, T>, name: i32, len: i32, out: i32| -> i32 {
            let Some((mem, data)) = memory(&mut caller) else {
                return MISSING_MEMORY;
            };
            errno(load_by_name(mem, get(data), name, len, None, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "load_by_name_with_config",
        move |mut caller: Caller<'_, T>,
              name: i32,
              len: i32,
              config: i32,
              config_len: i32,
              out: i32|
              -> i32 {
            let Some((mem, data)) = memory(&mut caller) else {
                return MISSING_MEMORY;
            };
            errno(load_by_name(
                mem,
                get(data),
                name,
                len,
                Some((config, config_len)),
                out,
            ))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "unload",
        move |mut caller: Caller<'_, T>, graph: i32| -> i32 {
            let state = get(caller.data_mut());
            match state
                .graphs
                .get_mut(graph as u32 as usize)
                .and_then(Option::take)
            {
                Some(g) => {
                    state.nn.release(g.held);
                    SUCCESS
                }
                None => tern_nn::Error::NotFound(String::new()).errno() as i32,
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "init_execution_context",
        move |mut caller: Caller<'_, T>, graph: i32, out: i32| -> i32 {
            let Some((mem, data)) = memory(&mut caller) else {
                return MISSING_MEMORY;
            };
            errno(init_execution_context(mem, get(data), graph, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "set_input",
        move |mut caller: Caller<'_, T>, cx: i32, index: i32, tensor: i32| -> i32 {
            let Some((mem, data)) = memory(&mut caller) else {
                return MISSING_MEMORY;
            };
            let state = get(data);
            errno(read_tensor(mem, tensor).and_then(|tensor| {
                let bytes = tensor.data.len() as u64;
                // Inputs are copied into the context and replaced, not
                // accumulated: the budget is checked, not kept.
                state.nn.take(bytes, "a tensor")?;
                state.nn.give_back(bytes);
                state
                    .context(cx as u32)?
                    .set_input(Id::Index(index as u32), tensor)
            }))
        },
    )?;
    for (name, single) in [("get_output", false), ("get_output_single", true)] {
        linker.func_wrap(
            MODULE,
            name,
            move |mut caller: Caller<'_, T>,
                  cx: i32,
                  index: i32,
                  buf: i32,
                  max: i32,
                  out: i32|
                  -> i32 {
                let Some((mem, data)) = memory(&mut caller) else {
                    return MISSING_MEMORY;
                };
                errno(get_output(mem, get(data), single, cx, index, buf, max, out))
            },
        )?;
    }
    linker.func_wrap(
        MODULE,
        "fini_single",
        move |mut caller: Caller<'_, T>, cx: i32| -> i32 {
            errno(
                get(caller.data_mut())
                    .context(cx as u32)
                    .and_then(Context::fini_single),
            )
        },
    )?;
    for (name, single) in [("compute", false), ("compute_single", true)] {
        linker.func_wrap_async(
            MODULE,
            name,
            move |mut caller: Caller<'_, T>, (cx,): (i32,)| {
                Box::new(async move {
                    let state = get(caller.data_mut());
                    let cancel = state.cancel.clone();
                    let slot = match state
                        .contexts
                        .get_mut(cx as u32 as usize)
                        .and_then(Option::as_mut)
                    {
                        Some(slot) => slot,
                        None => return Ok(tern_nn::Error::NotFound(String::new()).errno() as i32),
                    };
                    let Some(mut context) = slot.cx.take() else {
                        return Ok(tern_nn::Error::RuntimeError(String::new()).errno() as i32);
                    };
                    let (context, result) = off_thread(&cancel, move || {
                        let result = if single {
                            context.compute_single()
                        } else {
                            context.compute()
                        };
                        (context, result)
                    })
                    .await?;
                    if let Some(slot) = get(caller.data_mut())
                        .contexts
                        .get_mut(cx as u32 as usize)
                        .and_then(Option::as_mut)
                    {
                        slot.cx = Some(context);
                    }
                    Ok(errno(result))
                })
            },
        )?;
    }
    Ok(())
}

fn load(
    mem: &mut [u8],
    state: &mut NnP1,
    builders: i32,
    count: i32,
    encoding: i32,
    target: i32,
    out: i32,
) -> Result<(), tern_nn::Error> {
    let encoding = match encoding {
        1 => Encoding::Onnx,
        6 => Encoding::Ggml,
        other => {
            return Err(tern_nn::Error::InvalidEncoding(format!(
                "encoding {other} has no backend in this build (Tern runs ggml and onnx models)"
            )));
        }
    };
    // CPU (0) and AUTO (3) run here; a GPU or TPU is not in this build.
    if !matches!(target, 0 | 3) {
        return Err(tern_nn::Error::Unsupported(format!(
            "execution target {target} is not available; use CPU or AUTO"
        )));
    }
    if !(0..=16).contains(&count) {
        return Err(tern_nn::Error::InvalidArgument(format!(
            "{count} graph builders (at most 16)"
        )));
    }
    if write_u32(mem, out, 0).is_none() {
        return Err(invalid("the result pointer"));
    }
    let array =
        slice(mem, builders, count * 8).ok_or_else(|| invalid("the graph builder array"))?;
    let mut parts = Vec::new();
    let mut total = 0u64;
    for entry in array.chunks_exact(8) {
        let ptr = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let len = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        parts.push(slice(mem, ptr as i32, len as i32).ok_or_else(|| invalid("a graph builder"))?);
        total += u64::from(len);
    }
    state.nn.take(total, "a model")?;
    // A model given as bytes is parsed here, on the guest's thread: it is
    // bounded by the guest's own memory, and WasmEdge guests load by name.
    let model = match Model::from_builders(encoding, &parts) {
        Ok(model) => model,
        Err(err) => {
            state.nn.give_back(total);
            return Err(err);
        }
    };
    let held = Held::new(total);
    let added = state.add_graph(P1Graph {
        model,
        limits: Limits::default(),
        config: Vec::new(),
        held: held.clone(),
    });
    let id = added.inspect_err(|_| state.nn.release(held))?;
    write_u32(mem, out, id).ok_or_else(|| invalid("the result pointer"))
}

fn load_by_name(
    mem: &mut [u8],
    state: &mut NnP1,
    name: i32,
    len: i32,
    config: Option<(i32, i32)>,
    out: i32,
) -> Result<(), tern_nn::Error> {
    let name = slice(mem, name, len).ok_or_else(|| invalid("the model name"))?;
    let name = std::str::from_utf8(name)
        .map_err(|_| tern_nn::Error::InvalidArgument("the model name is not UTF-8".into()))?;
    let config = match config {
        Some((ptr, len)) => slice(mem, ptr, len)
            .ok_or_else(|| invalid("the config"))?
            .to_vec(),
        None => Vec::new(),
    };
    let model = state.nn.granted(name)?.clone();
    if write_u32(mem, out, 0).is_none() {
        return Err(invalid("the result pointer"));
    }
    let id = state.add_graph(P1Graph {
        model: model.model.clone(),
        limits: model.limits,
        config,
        held: Held::default(),
    })?;
    write_u32(mem, out, id).ok_or_else(|| invalid("the result pointer"))
}

fn init_execution_context(
    mem: &mut [u8],
    state: &mut NnP1,
    graph: i32,
    out: i32,
) -> Result<(), tern_nn::Error> {
    if write_u32(mem, out, 0).is_none() {
        return Err(invalid("the result pointer"));
    }
    if state.open() >= MAX_OPEN as usize {
        return Err(too_many());
    }
    let graph = state.graph(graph as u32)?;
    let cx = Context::new(
        &graph.model,
        &graph.config,
        graph.limits,
        state.cancel.clone(),
    )?;
    let held = graph.held.clone();
    state.contexts.push(Some(P1Context {
        cx: Some(cx),
        _held: held,
    }));
    let id = state.contexts.len() as u32 - 1;
    write_u32(mem, out, id).ok_or_else(|| invalid("the result pointer"))
}

#[allow(clippy::too_many_arguments)]
fn get_output(
    mem: &mut [u8],
    state: &mut NnP1,
    single: bool,
    cx: i32,
    index: i32,
    buf: i32,
    max: i32,
    out: i32,
) -> Result<(), tern_nn::Error> {
    // The whole buffer and the result pointer are checked first, as
    // WasmEdge does: a bad pointer is an error whatever the output.
    let start = buf as u32 as usize;
    let span = start
        .checked_add(max as u32 as usize)
        .filter(|&end| end <= mem.len())
        .ok_or_else(|| invalid("the output buffer"))?;
    if write_u32(mem, out, 0).is_none() {
        return Err(invalid("the result pointer"));
    }
    let context = state.context(cx as u32)?;
    let id = Id::Index(index as u32);
    let tensor = if single {
        context.output_single(id)?
    } else {
        context.output(id)?
    };
    let len = tensor.data.len();
    if len > max as u32 as usize {
        return Err(tern_nn::Error::TooLarge(format!(
            "the output is {len} bytes, the buffer {max}"
        )));
    }
    let dest = mem
        .get_mut(start..start + len)
        .filter(|_| start + len <= span)
        .ok_or_else(|| invalid("the output buffer"))?;
    dest.copy_from_slice(&tensor.data);
    write_u32(mem, out, len as u32).ok_or_else(|| invalid("the result pointer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_outside_memory_are_refused() {
        let mem = vec![0u8; 64];
        assert!(slice(&mem, 60, 4).is_some());
        assert!(slice(&mem, 61, 4).is_none());
        assert!(slice(&mem, -16, 100).is_none());
        assert!(read_tensor(&mem, 50).is_err());
        assert_eq!(errno(Err(tern_nn::Error::EndOfSequence)), 100);
    }
}
