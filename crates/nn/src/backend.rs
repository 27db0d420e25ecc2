//! Tern's models behind `wasmtime-wasi-nn`'s public backend traits
//! ([`BackendInner`], [`BackendGraph`], [`BackendExecutionContext`]), so
//! that its `Graph` and `ExecutionContext` resources carry them. Tern's own
//! `wasi:nn` binding (in `tern-runtime`) uses these same types; an embedder
//! may also hand [`TernBackend`]s to `wasmtime_wasi_nn::wit::WasiNnCtx`.
//!
//! A backend error travels inside `BackendError::BackendAccess` as a
//! [`crate::Error`], so a binding can downcast it back and give the guest
//! the right code.

use std::path::Path;

use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner,
    Id as WasiId, NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding};
use wasmtime_wasi_nn::{ExecutionContext, Graph};

use crate::{Cancel, Context, Encoding, Error, Id, Limits, Model, Tensor};

/// A backend for one encoding, loading models with the given limits.
pub struct TernBackend {
    encoding: Encoding,
    limits: Limits,
}

impl TernBackend {
    /// A backend for `encoding`.
    pub fn new(encoding: Encoding, limits: Limits) -> TernBackend {
        TernBackend { encoding, limits }
    }
}

/// The WIT name of an encoding.
pub fn wit_encoding(encoding: Encoding) -> GraphEncoding {
    match encoding {
        Encoding::Ggml => GraphEncoding::Ggml,
        Encoding::Onnx => GraphEncoding::Onnx,
    }
}

/// A model as a `wasmtime-wasi-nn` graph: each context it makes starts
/// from `config` (JSON options), is bounded by `limits` and stops when
/// `cancel` is set.
pub fn graph(model: &Model, config: &[u8], limits: Limits, cancel: Cancel) -> Graph {
    Graph::from(Box::new(TernGraph {
        model: model.clone(),
        config: config.to_vec(),
        limits,
        cancel,
    }) as Box<dyn BackendGraph>)
}

/// A [`crate::Error`] as the error `wasmtime-wasi-nn`'s traits return.
pub fn to_backend(err: Error) -> BackendError {
    BackendError::BackendAccess(wasmtime::Error::new(err))
}

impl BackendInner for TernBackend {
    fn encoding(&self) -> GraphEncoding {
        wit_encoding(self.encoding)
    }

    fn load(
        &mut self,
        builders: &[&[u8]],
        _target: ExecutionTarget,
    ) -> Result<Graph, BackendError> {
        let model = Model::from_builders(self.encoding, builders).map_err(to_backend)?;
        Ok(graph(&model, b"", self.limits, Cancel::default()))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        Some(self)
    }
}

impl BackendFromDir for TernBackend {
    fn load_from_dir(
        &mut self,
        path: &Path,
        _target: ExecutionTarget,
    ) -> Result<Graph, BackendError> {
        let model = Model::load(self.encoding, path).map_err(to_backend)?;
        Ok(graph(&model, b"", self.limits, Cancel::default()))
    }
}

struct TernGraph {
    model: Model,
    config: Vec<u8>,
    limits: Limits,
    cancel: Cancel,
}

impl BackendGraph for TernGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let cx = Context::new(&self.model, &self.config, self.limits, self.cancel.clone())
            .map_err(to_backend)?;
        Ok(ExecutionContext::from(
            Box::new(cx) as Box<dyn BackendExecutionContext>
        ))
    }
}

fn id(id: WasiId) -> Id {
    match id {
        WasiId::Index(i) => Id::Index(i),
        WasiId::Name(n) => Id::Name(n),
    }
}

impl BackendExecutionContext for Context {
    fn set_input(&mut self, which: WasiId, tensor: &Tensor) -> Result<(), BackendError> {
        Context::set_input(self, id(which), tensor.clone()).map_err(to_backend)
    }

    fn get_output(&mut self, which: WasiId) -> Result<Tensor, BackendError> {
        self.output(id(which)).map_err(to_backend)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(inputs) = inputs else {
            return Context::compute(self).map(|()| None).map_err(to_backend);
        };
        let inputs = inputs.into_iter().map(|t| (t.name, t.tensor)).collect();
        let outputs = self.compute_with_io(inputs).map_err(to_backend)?;
        Ok(Some(
            outputs
                .into_iter()
                .map(|(name, tensor)| NamedTensor { name, tensor })
                .collect(),
        ))
    }
}
