//! Tern's models through `wasmtime-wasi-nn`'s own registry and resources,
//! as an embedder using that crate's linker gets them: loaded from a
//! directory by [`TernBackend`] into its `InMemoryRegistry`, run through its
//! `Graph` and `ExecutionContext`, on the Iris classifier of onnxruntime's
//! wheel (`scripts/setup`).

use std::path::Path;

use tern_nn::backend::TernBackend;
use tern_nn::{Encoding, Limits, Tensor, TensorType};
use wasmtime_wasi_nn::backend::{BackendError, Id};
use wasmtime_wasi_nn::{Backend, GraphRegistry, InMemoryRegistry};

#[test]
fn a_model_loads_into_wasmtime_wasi_nn_s_registry_and_runs() {
    let mut backend = Backend::from(TernBackend::new(Encoding::Onnx, Limits::default()));
    let dir = Path::new(test_programs::MODELS_DIR).join("iris");
    let mut registry = InMemoryRegistry::new();
    let loader = backend
        .as_dir_loadable()
        .expect("Tern's backends load from directories");
    registry
        .load(loader, &dir)
        .expect("loading the model directory");
    // Named by the directory's last component, as wasmtime's CLI names it.
    let graph = registry
        .get("iris")
        .expect("registered under its directory's name");

    let mut cx = graph.init_execution_context().unwrap();
    let features: Vec<u8> = [6.7f32, 3.0, 5.2, 2.3]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    cx.set_input(
        Id::Index(0),
        &Tensor::new(vec![1, 4], TensorType::Fp32, features),
    )
    .unwrap();
    cx.compute().unwrap();
    let label = cx.get_output(Id::Name("label".into())).unwrap();
    assert_eq!(label.ty, TensorType::I64);
    assert_eq!(label.data, 2i64.to_le_bytes());

    // Tern's error travels inside the trait's error, for a binding to
    // read back.
    let Err(BackendError::BackendAccess(err)) = cx.get_output(Id::Name("nope".into())) else {
        panic!("an output the model lacks is an error");
    };
    let err = err.downcast::<tern_nn::Error>().unwrap();
    assert!(matches!(err, tern_nn::Error::NotFound(_)), "{err}");
}
