//! WASI-NN for guests: the component interface `wasi:nn@0.2.0-rc-2024-10-28`
//! (this module) and WasmEdge's preview 1 `wasi_ephemeral_nn` functions
//! for core modules ([`p1`]), both over `tern-nn`'s models.
//!
//! Grants: a guest sees only the models granted to it ([`Nn`]), by name
//! (`load-by-name`); any other name is `not-found`, whether another
//! component was granted it or nobody declared it. `load` from bytes the
//! guest holds is granted too ([`Nn::loading_bytes`]: `nn_load_bytes` for a
//! component, always for `tern run`), and then allowed within the
//! instance's memory limit, which also bounds the tensors it keeps on the
//! host. An error's text is cut to 1 KiB.
//!
//! Inference runs on tokio's blocking pool, never on the thread serving
//! requests: a generation takes seconds, and the worker's other requests
//! go on meanwhile. When the guest's call is dropped (its deadline passed,
//! its client went away) a guard cancels the inference, and generation
//! stops before its next token.
//!
//! The graph and context resources hold `wasmtime-wasi-nn`'s own `Graph`
//! and `ExecutionContext`, made through its backend traits
//! ([`tern_nn::backend`]); the binding is Tern's because wasmtime-wasi-nn's
//! calls `compute` on the guest's thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_nn::backend::graph;
use tern_nn::{Cancel, Encoding, Model};
use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use crate::services::ServicesView;

pub mod p1;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/nn",
        world: "wasi:nn/ml",
        imports: { default: async | trappable },
        with: {
            "wasi:nn/graph.graph": super::NnGraph,
            "wasi:nn/tensor.tensor": wasmtime_wasi_nn::Tensor,
            "wasi:nn/inference.graph-execution-context": super::NnContext,
            "wasi:nn/errors.error": super::NnError,
        },
    });
}

use bindings::wasi::nn::errors::{self, ErrorCode};
use bindings::wasi::nn::graph::{self as wit_graph, ExecutionTarget, GraphEncoding};
use bindings::wasi::nn::{inference, tensor};

/// A model the app declares, loaded once and shared by every instance.
pub struct NnModel {
    /// The loaded model.
    pub model: Model,
    /// What one request may ask of it.
    pub limits: tern_nn::Limits,
}

/// What one component may use: the app's models and the names it was
/// granted. Cloning is cheap; each instance gets its own.
#[derive(Clone, Default)]
pub struct Nn {
    models: Arc<BTreeMap<String, Arc<NnModel>>>,
    granted: Arc<[String]>,
    /// Bytes of models and tensors this instance may hold on the host.
    budget: u64,
    held: u64,
    /// Graphs, contexts, tensors and errors this instance holds.
    open: u32,
    /// Whether the guest may load a model from bytes it holds: what such
    /// a model does is the guest's to choose, so it is granted, not given.
    load_bytes: bool,
}

/// Objects one instance may hold at once: a guest making tensors in a loop
/// would otherwise grow host memory outside its memory limit.
pub const MAX_OPEN: u32 = 4096;

/// The longest text an error resource keeps.
const MAX_ERROR_TEXT: usize = 1024;

/// The most dimensions a tensor may have: more than any model takes, and
/// its dimensions are copied into each error and each plan's key.
pub(crate) const MAX_RANK: usize = 8;

impl Nn {
    /// Access to `granted` among the app's `models`; models and tensors a
    /// guest passes in may take up to `budget` bytes on the host.
    pub fn new(models: Arc<BTreeMap<String, Arc<NnModel>>>, granted: &[String], budget: u64) -> Nn {
        Nn {
            models,
            granted: granted.into(),
            budget,
            held: 0,
            open: 0,
            load_bytes: false,
        }
    }

    /// Lets the guest load models from bytes it holds (`load`), or not
    /// (the default): `nn_load_bytes = true` in a component's table, and
    /// always for `tern run`'s own program.
    pub fn loading_bytes(mut self, allowed: bool) -> Nn {
        self.load_bytes = allowed;
        self
    }

    /// The granted model `name`, or why not.
    pub(crate) fn granted(&self, name: &str) -> Result<&Arc<NnModel>, tern_nn::Error> {
        // One answer for a model another component was granted and one
        // nobody declared: a guest cannot probe what else the app has.
        match self.models.get(name) {
            Some(model) if self.granted.iter().any(|g| g == name) => Ok(model),
            _ => Err(tern_nn::Error::NotFound(format!(
                "no model named `{name}` is granted to this component"
            ))),
        }
    }

    /// Takes `bytes` of the budget for something the guest passed in.
    pub(crate) fn take(&mut self, bytes: u64, what: &str) -> Result<(), tern_nn::Error> {
        let held = self.held.saturating_add(bytes);
        if held > self.budget {
            return Err(tern_nn::Error::TooLarge(format!(
                "{what} of {bytes} bytes is over this instance's limit of {} bytes for models and tensors",
                self.budget
            )));
        }
        self.held = held;
        Ok(())
    }

    pub(crate) fn give_back(&mut self, bytes: u64) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Drops one holder of `held`, giving its bytes back if it was the
    /// last: a context keeps its model in memory after its graph is gone.
    pub(crate) fn release(&mut self, held: Held) {
        if Arc::strong_count(&held.share) == 1 {
            self.give_back(held.bytes);
        }
    }
}

/// The budget a model the guest loaded itself takes, shared by its graph
/// and every context made from it (each holds the model), and given back
/// with the last of them ([`Nn::release`]).
#[derive(Clone, Default)]
pub(crate) struct Held {
    bytes: u64,
    share: Arc<()>,
}

impl Held {
    /// `bytes` taken from the budget.
    pub(crate) fn new(bytes: u64) -> Held {
        Held {
            bytes,
            share: Arc::new(()),
        }
    }
}

/// A guest's graph: a model with this instance's limits and cancel flag.
pub struct NnGraph {
    graph: Graph,
    cancel: Cancel,
    /// The budget its model holds (one the guest loaded itself).
    held: Held,
}

/// A guest's execution context. `None` while a compute has it on the
/// blocking pool.
pub struct NnContext {
    cx: Option<ExecutionContext>,
    cancel: Cancel,
    /// Its graph's model's share of the budget.
    held: Held,
}

/// The `error` resource.
#[derive(Debug)]
pub struct NnError {
    code: ErrorCode,
    data: String,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = ServicesView<'a>;
}

/// Adds `wasi:nn` to `linker`. Linking is free for a component that does
/// not import it.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    bindings::wasi::nn::errors::add_to_linker::<T, HasNn>(linker, get)?;
    bindings::wasi::nn::tensor::add_to_linker::<T, HasNn>(linker, get)?;
    bindings::wasi::nn::inference::add_to_linker::<T, HasNn>(linker, get)?;
    bindings::wasi::nn::graph::add_to_linker::<T, HasNn>(linker, get)?;
    Ok(())
}

/// The interface's code for a backend error.
fn code_of(err: &tern_nn::Error) -> ErrorCode {
    use tern_nn::Error as E;
    match err {
        E::InvalidArgument(_) => ErrorCode::InvalidArgument,
        E::InvalidEncoding(_) => ErrorCode::InvalidEncoding,
        E::NotFound(_) => ErrorCode::NotFound,
        E::Unsupported(_) => ErrorCode::UnsupportedOperation,
        E::TooLarge(_) | E::PromptTooLong { .. } => ErrorCode::TooLarge,
        E::Cancelled => ErrorCode::Timeout,
        E::RuntimeError(_) | E::EndOfSequence | E::ContextFull => ErrorCode::RuntimeError,
    }
}

/// A backend error as it came through `wasmtime-wasi-nn`'s traits.
fn from_backend(err: BackendError) -> tern_nn::Error {
    match err {
        BackendError::BackendAccess(e) => match e.downcast::<tern_nn::Error>() {
            Ok(err) => err,
            Err(other) => tern_nn::Error::RuntimeError(other.to_string()),
        },
        other => tern_nn::Error::RuntimeError(other.to_string()),
    }
}

/// Cancels the inference if the guest's call is dropped before it ends.
struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

/// Runs `work` on the blocking pool, cancelling it through `cancel` if
/// this future is dropped first.
pub(crate) async fn off_thread<R: Send + 'static>(
    cancel: &Cancel,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    let guard = CancelOnDrop(Some(cancel.clone()));
    let done = tokio::task::spawn_blocking(work).await;
    guard.disarm();
    done.map_err(|e| wasmtime::format_err!("inference thread failed: {e}"))
}

type NnResult<T> = Result<Result<T, Resource<NnError>>>;

impl ServicesView<'_> {
    /// Pushes `value` into the table, counted against [`MAX_OPEN`].
    fn push_nn<V: Send + 'static>(
        &mut self,
        value: V,
    ) -> Result<Result<Resource<V>, tern_nn::Error>> {
        if self.services.nn.open >= MAX_OPEN {
            return Ok(Err(tern_nn::Error::TooLarge(format!(
                "more than {MAX_OPEN} wasi-nn objects open at once"
            ))));
        }
        self.services.nn.open += 1;
        Ok(Ok(self.table.push(value)?))
    }

    fn delete_nn<V: 'static>(&mut self, handle: Resource<V>) -> Result<V> {
        let value = self.table.delete(handle)?;
        self.services.nn.open = self.services.nn.open.saturating_sub(1);
        Ok(value)
    }

    /// The guest's `error` resource for `err`.
    fn nn_error<T>(&mut self, err: tern_nn::Error) -> NnResult<T> {
        let mut data = err.to_string();
        // A message may quote what the guest passed (a name, an option):
        // an error resource holds a line, not the guest's whole input.
        if data.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !data.is_char_boundary(end) {
                end -= 1;
            }
            data.truncate(end);
            data.push_str("...");
        }
        let error = NnError {
            code: code_of(&err),
            data,
        };
        // An error is pushed even past the cap: the guest must learn why.
        self.services.nn.open += 1;
        Ok(Err(self.table.push(error)?))
    }

    fn pushed<V: Send + 'static>(&mut self, value: V) -> NnResult<Resource<V>> {
        match self.push_nn(value)? {
            Ok(handle) => Ok(Ok(handle)),
            Err(err) => self.nn_error(err),
        }
    }

    fn new_graph(
        &mut self,
        model: &Model,
        limits: tern_nn::Limits,
        held: Held,
    ) -> NnResult<Resource<NnGraph>> {
        let cancel = Cancel::default();
        let graph = NnGraph {
            graph: graph(model, b"", limits, cancel.clone()),
            cancel,
            held: held.clone(),
        };
        let pushed = self.pushed(graph)?;
        if pushed.is_err() {
            // Not made: its model's bytes are not held.
            self.services.nn.release(held);
        }
        Ok(pushed)
    }
}

fn encoding_of(encoding: GraphEncoding) -> Result<Encoding, tern_nn::Error> {
    match encoding {
        GraphEncoding::Ggml => Ok(Encoding::Ggml),
        GraphEncoding::Onnx => Ok(Encoding::Onnx),
        other => Err(tern_nn::Error::InvalidEncoding(format!(
            "no {other:?} backend in this build (Tern runs ggml and onnx models)"
        ))),
    }
}

impl wit_graph::Host for ServicesView<'_> {
    async fn load(
        &mut self,
        builders: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> NnResult<Resource<NnGraph>> {
        let encoding = match encoding_of(encoding) {
            Ok(encoding) => encoding,
            Err(err) => return self.nn_error(err),
        };
        if !matches!(target, ExecutionTarget::Cpu) {
            return self.nn_error(tern_nn::Error::Unsupported(format!(
                "no {target:?} execution target in this build; use cpu"
            )));
        }
        if !self.services.nn.load_bytes {
            return self.nn_error(tern_nn::Error::Unsupported(
                "loading a model from bytes is not granted to this component (`nn_load_bytes = true` in its table grants it); `load-by-name` loads a granted model".into(),
            ));
        }
        let bytes: u64 = builders.iter().map(|b| b.len() as u64).sum();
        if let Err(err) = self.services.nn.take(bytes, "a model") {
            return self.nn_error(err);
        }
        let cancel = Cancel::default();
        let loaded = off_thread(&cancel, move || {
            let slices: Vec<&[u8]> = builders.iter().map(Vec::as_slice).collect();
            Model::from_builders(encoding, &slices)
        })
        .await?;
        match loaded {
            Ok(model) => self.new_graph(&model, tern_nn::Limits::default(), Held::new(bytes)),
            Err(err) => {
                self.services.nn.give_back(bytes);
                self.nn_error(err)
            }
        }
    }

    async fn load_by_name(&mut self, name: String) -> NnResult<Resource<NnGraph>> {
        let granted = self.services.nn.granted(&name).cloned();
        match granted {
            Ok(model) => self.new_graph(&model.model, model.limits, Held::default()),
            Err(err) => self.nn_error(err),
        }
    }
}

impl wit_graph::HostGraph for ServicesView<'_> {
    async fn init_execution_context(
        &mut self,
        graph: Resource<NnGraph>,
    ) -> NnResult<Resource<NnContext>> {
        let graph = self.table.get(&graph)?;
        let (cancel, held) = (graph.cancel.clone(), graph.held.clone());
        match graph.graph.init_execution_context() {
            Ok(cx) => self.pushed(NnContext {
                cx: Some(cx),
                cancel,
                held,
            }),
            Err(err) => self.nn_error(from_backend(err)),
        }
    }

    async fn drop(&mut self, graph: Resource<NnGraph>) -> Result<()> {
        let graph = self.delete_nn(graph)?;
        self.services.nn.release(graph.held);
        Ok(())
    }
}

impl inference::Host for ServicesView<'_> {}

impl inference::HostGraphExecutionContext for ServicesView<'_> {
    async fn compute(
        &mut self,
        cx: Resource<NnContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> NnResult<Vec<(String, Resource<Tensor>)>> {
        let mut named = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let tensor = self.delete_nn(tensor)?;
            self.services.nn.give_back(tensor.data.len() as u64);
            named.push(NamedTensor { name, tensor });
        }
        let context = self.table.get_mut(&cx)?;
        let cancel = context.cancel.clone();
        let Some(mut exec) = context.cx.take() else {
            return self.nn_error(tern_nn::Error::RuntimeError(
                "this context is already computing".into(),
            ));
        };
        let (exec, result) = off_thread(&cancel, move || {
            let result = exec.compute_with_io(named);
            (exec, result)
        })
        .await?;
        self.table.get_mut(&cx)?.cx = Some(exec);
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(err) => return self.nn_error(from_backend(err)),
        };
        let mut handed = Vec::with_capacity(outputs.len());
        for NamedTensor { name, tensor } in outputs {
            // Outputs count against the budget like inputs: dropping one
            // gives its bytes back.
            if let Err(err) = self
                .services
                .nn
                .take(tensor.data.len() as u64, "an output tensor")
            {
                return self.nn_error(err);
            }
            match self.push_nn(tensor)? {
                Ok(handle) => handed.push((name, handle)),
                Err(err) => return self.nn_error(err),
            }
        }
        Ok(Ok(handed))
    }

    async fn drop(&mut self, cx: Resource<NnContext>) -> Result<()> {
        let cx = self.delete_nn(cx)?;
        self.services.nn.release(cx.held);
        Ok(())
    }
}

impl tensor::Host for ServicesView<'_> {}

impl tensor::HostTensor for ServicesView<'_> {
    async fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: tensor::TensorType,
        data: Vec<u8>,
    ) -> Result<Resource<Tensor>> {
        // A constructor cannot return an error: over the budget, or past
        // the rank any model takes, it traps with the reason.
        if dimensions.len() > MAX_RANK {
            return Err(wasmtime::format_err!(
                "a tensor of {} dimensions: at most {MAX_RANK}",
                dimensions.len()
            ));
        }
        self.services
            .nn
            .take(data.len() as u64, "a tensor")
            .map_err(|e| wasmtime::format_err!("{e}"))?;
        let tensor = Tensor::new(dimensions, their_type(ty), data);
        match self.push_nn(tensor)? {
            Ok(handle) => Ok(handle),
            Err(err) => Err(wasmtime::format_err!("{err}")),
        }
    }

    async fn dimensions(&mut self, tensor: Resource<Tensor>) -> Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    async fn ty(&mut self, tensor: Resource<Tensor>) -> Result<tensor::TensorType> {
        Ok(our_type(self.table.get(&tensor)?.ty))
    }

    async fn data(&mut self, tensor: Resource<Tensor>) -> Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    async fn drop(&mut self, tensor: Resource<Tensor>) -> Result<()> {
        let tensor = self.delete_nn(tensor)?;
        self.services.nn.give_back(tensor.data.len() as u64);
        Ok(())
    }
}

impl errors::Host for ServicesView<'_> {}

impl errors::HostError for ServicesView<'_> {
    async fn code(&mut self, error: Resource<NnError>) -> Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    async fn data(&mut self, error: Resource<NnError>) -> Result<String> {
        Ok(self.table.get(&error)?.data.clone())
    }

    async fn drop(&mut self, error: Resource<NnError>) -> Result<()> {
        self.delete_nn(error)?;
        Ok(())
    }
}

/// The same enum, generated twice: here and in `wasmtime-wasi-nn`.
fn their_type(ty: tensor::TensorType) -> tern_nn::TensorType {
    use tensor::TensorType as T;
    use tern_nn::TensorType as U;
    match ty {
        T::Fp16 => U::Fp16,
        T::Fp32 => U::Fp32,
        T::Fp64 => U::Fp64,
        T::Bf16 => U::Bf16,
        T::U8 => U::U8,
        T::I32 => U::I32,
        T::I64 => U::I64,
    }
}

fn our_type(ty: tern_nn::TensorType) -> tensor::TensorType {
    use tensor::TensorType as T;
    use tern_nn::TensorType as U;
    match ty {
        U::Fp16 => T::Fp16,
        U::Fp32 => T::Fp32,
        U::Fp64 => T::Fp64,
        U::Bf16 => T::Bf16,
        U::U8 => T::U8,
        U::I32 => T::I32,
        U::I64 => T::I64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::ResourceTable;
    use wit_graph::Host as _;

    #[tokio::test]
    async fn loading_from_bytes_is_granted_not_given() {
        let mut table = ResourceTable::new();
        let mut services =
            crate::Services::default().with_nn(Nn::new(Arc::default(), &[], 1 << 20));
        let mut view = ServicesView {
            services: &mut services,
            table: &mut table,
        };
        let bytes = || vec![b"not a model".to_vec()];
        let refused = view
            .load(bytes(), GraphEncoding::Onnx, ExecutionTarget::Cpu)
            .await
            .unwrap()
            .unwrap_err();
        let error = view.table.get(&refused).unwrap();
        assert!(
            error
                .data
                .starts_with("loading a model from bytes is not granted"),
            "{}",
            error.data
        );
        // Granted, the bytes are parsed (and these are no model).
        view.services.nn.load_bytes = true;
        let parsed = view
            .load(bytes(), GraphEncoding::Onnx, ExecutionTarget::Cpu)
            .await
            .unwrap()
            .unwrap_err();
        let error = view.table.get(&parsed).unwrap();
        assert!(
            !matches!(error.code, ErrorCode::UnsupportedOperation),
            "{}",
            error.data
        );
    }

    #[test]
    fn an_error_keeps_a_line_of_text() {
        let mut table = ResourceTable::new();
        let mut services = crate::Services::default();
        let mut view = ServicesView {
            services: &mut services,
            table: &mut table,
        };
        let long = "x".repeat(1 << 20);
        let error = view
            .nn_error::<()>(tern_nn::Error::NotFound(long))
            .unwrap()
            .unwrap_err();
        let data = &view.table.get(&error).unwrap().data;
        assert_eq!(data.len(), MAX_ERROR_TEXT + 3);
        assert!(data.ends_with("..."));
    }
}
