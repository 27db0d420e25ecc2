//! ONNX models on tract: parsed once at load, then optimized into a plan
//! for each set of input shapes a guest sends (a few are kept), and run by
//! any number of contexts at once (a plan is immutable; each run makes its
//! own state).
//!
//! Plans are made per shape rather than at load because models often
//! declare input shapes that are wrong (the Iris classifier in
//! onnxruntime's datasets says `[3, 2]` and takes `[N, 4]`) or that only
//! concrete shapes make typeable (Magika's `BroadcastTo` of a computed
//! shape).
//!
//! Outputs that tract cannot compute are dropped at load when the others
//! still can be: ONNX-ML classifiers end in a `ZipMap` (a sequence of
//! maps, which no WASI-NN tensor can carry anyway) beside the plain
//! tensors of labels and probabilities that guests read.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;

use crate::{Error, Tensor, TensorType};

/// Input shapes whose plans are kept; a guest sending ever new shapes
/// makes the oldest go.
const PLANS_KEPT: usize = 8;

type Shapes = Vec<(DatumType, Vec<usize>)>;

/// A loaded ONNX model.
pub struct OnnxModel {
    model: InferenceModel,
    inputs: Vec<(String, Option<DatumType>)>,
    outputs: Vec<String>,
    plans: Mutex<Vec<(Shapes, Arc<TypedRunnableModel>)>>,
}

impl OnnxModel {
    /// Loads the model in `path`.
    pub fn load(path: &Path) -> Result<OnnxModel, Error> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::NotFound(format!("reading the model: {e}")))?;
        OnnxModel::from_bytes(&bytes)
    }

    /// Loads a model held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel, Error> {
        let invalid = |e: TractError| {
            Error::InvalidEncoding(format!("not a usable ONNX model: {}", one_line(&e)))
        };
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &*bytes)
            .map_err(invalid)?;
        drop_unimplemented_outputs(&mut model).map_err(invalid)?;
        let mut inputs = Vec::new();
        for (ix, outlet) in model.input_outlets().map_err(invalid)?.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let dt = model
                .input_fact(ix)
                .map_err(invalid)?
                .datum_type
                .concretize();
            inputs.push((name, dt));
        }
        let outputs = model
            .output_outlets()
            .map_err(invalid)?
            .iter()
            .map(|outlet| {
                model
                    .outlet_label(*outlet)
                    .map_or_else(|| model.node(outlet.node).name.clone(), str::to_owned)
            })
            .collect();
        Ok(OnnxModel {
            model,
            inputs,
            outputs,
            plans: Mutex::new(Vec::new()),
        })
    }

    /// The model's input names, in order.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|(name, _)| name.as_str())
    }

    /// The model's output names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// The index of the input called `name`.
    pub(crate) fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|(n, _)| n == name)
    }

    /// The plan for inputs of these types and shapes, made if need be.
    fn plan(&self, shapes: &Shapes) -> Result<Arc<TypedRunnableModel>, Error> {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, plan)) = plans.iter().find(|(s, _)| s == shapes) {
            return Ok(plan.clone());
        }
        let refused = |e: TractError| {
            Error::InvalidArgument(format!(
                "the model cannot run on inputs of shapes {:?}: {}",
                shapes.iter().map(|(_, s)| s).collect::<Vec<_>>(),
                one_line(&e)
            ))
        };
        let mut model = self.model.clone();
        for (ix, (dt, shape)) in shapes.iter().enumerate() {
            model
                .set_input_fact(ix, InferenceFact::dt_shape(*dt, shape.as_slice()))
                .map_err(refused)?;
        }
        let plan = model
            .into_optimized()
            .and_then(|typed| typed.into_runnable())
            .map_err(refused)?;
        if plans.len() >= PLANS_KEPT {
            plans.remove(0);
        }
        plans.push((shapes.clone(), plan.clone()));
        Ok(plan)
    }

    /// Runs the model on `inputs` (one per model input, in order).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<(String, Tensor)>, Error> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::InvalidArgument(format!(
                "the model takes {} inputs, {} were given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut values = TVec::new();
        let mut shapes = Vec::with_capacity(inputs.len());
        for (tensor, (name, dt)) in inputs.iter().zip(&self.inputs) {
            let t = to_tract(tensor)
                .map_err(|m| Error::InvalidArgument(format!("input `{name}`: {m}")))?;
            // A guest that sends i64 to an i32 input (or f64 to f32) means
            // the same numbers: cast rather than refuse.
            let t = match dt {
                Some(dt) if t.datum_type() != *dt => t
                    .cast_to_dt(*dt)
                    .map_err(|e| {
                        Error::InvalidArgument(format!("input `{name}`: {}", one_line(&e)))
                    })?
                    .into_owned(),
                _ => t,
            };
            shapes.push((t.datum_type(), t.shape().to_vec()));
            values.push(t.into_tvalue());
        }
        let plan = self.plan(&shapes)?;
        let results = plan
            .run(values)
            .map_err(|e| Error::RuntimeError(format!("running the model: {}", one_line(&e))))?;
        results
            .into_iter()
            .zip(&self.outputs)
            .map(|(value, name)| {
                let tensor = from_tract(&value)
                    .map_err(|m| Error::Unsupported(format!("output `{name}`: {m}")))?;
                Ok((name.clone(), tensor))
            })
            .collect()
    }
}

/// Drops the outputs computed by operators tract does not implement, as
/// long as some output is left.
fn drop_unimplemented_outputs(model: &mut InferenceModel) -> TractResult<()> {
    let outputs = model.output_outlets()?.to_vec();
    let kept: Vec<OutletId> = outputs
        .iter()
        .copied()
        .filter(|outlet| model.node(outlet.node).op_as::<UnimplementedOp>().is_none())
        .collect();
    if !kept.is_empty() && kept.len() != outputs.len() {
        model.select_output_outlets(&kept)?;
    }
    Ok(())
}

/// tract's errors carry a chain of causes over several lines.
fn one_line(err: &TractError) -> String {
    format!("{err:#}").replace('\n', "; ")
}

fn element_size(ty: TensorType) -> usize {
    match ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// A WASI-NN tensor as a tract one, checking that its data matches its
/// dimensions.
fn to_tract(tensor: &Tensor) -> Result<tract_onnx::prelude::Tensor, String> {
    let shape: Vec<usize> = tensor.dimensions.iter().map(|&d| d as usize).collect();
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("the dimensions overflow")?;
    let size = element_size(tensor.ty);
    let expected = elements
        .checked_mul(size)
        .ok_or("the dimensions overflow")?;
    if tensor.data.len() != expected {
        return Err(format!(
            "{} bytes of data, but dimensions {:?} of {:?} need {expected}",
            tensor.data.len(),
            tensor.dimensions,
            tensor.ty
        ));
    }
    let data = &tensor.data;
    let made = match tensor.ty {
        TensorType::U8 => tract_onnx::prelude::Tensor::from_shape(&shape, data),
        TensorType::Fp16 => {
            let v: Vec<f16> = data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            tract_onnx::prelude::Tensor::from_shape(&shape, &v)
        }
        TensorType::Fp32 => {
            tract_onnx::prelude::Tensor::from_shape(&shape, &le::<4, f32>(data, f32::from_le_bytes))
        }
        TensorType::Fp64 => {
            tract_onnx::prelude::Tensor::from_shape(&shape, &le::<8, f64>(data, f64::from_le_bytes))
        }
        TensorType::I32 => {
            tract_onnx::prelude::Tensor::from_shape(&shape, &le::<4, i32>(data, i32::from_le_bytes))
        }
        TensorType::I64 => {
            tract_onnx::prelude::Tensor::from_shape(&shape, &le::<8, i64>(data, i64::from_le_bytes))
        }
        TensorType::Bf16 => return Err("bf16 tensors are not supported by the onnx backend".into()),
    };
    made.map_err(|e| one_line(&e))
}

/// Little-endian elements of `N` bytes each.
fn le<const N: usize, T>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(c);
            from(bytes)
        })
        .collect()
}

/// A tract tensor as a WASI-NN one (little-endian data).
fn from_tract(value: &tract_onnx::prelude::Tensor) -> Result<Tensor, String> {
    let dimensions = value
        .shape()
        .iter()
        .map(|&d| u32::try_from(d).map_err(|_| format!("dimension {d} is too large")))
        .collect::<Result<Vec<u32>, String>>()?;
    let (ty, data) = match value.datum_type() {
        DatumType::U8 => (TensorType::U8, value.as_bytes().to_vec()),
        DatumType::Bool => (TensorType::U8, value.as_bytes().to_vec()),
        DatumType::F16 => (
            TensorType::Fp16,
            bytes_of::<f16, 2>(value, f16::to_le_bytes)?,
        ),
        DatumType::F32 => (
            TensorType::Fp32,
            bytes_of::<f32, 4>(value, f32::to_le_bytes)?,
        ),
        DatumType::F64 => (
            TensorType::Fp64,
            bytes_of::<f64, 8>(value, f64::to_le_bytes)?,
        ),
        DatumType::I32 => (
            TensorType::I32,
            bytes_of::<i32, 4>(value, i32::to_le_bytes)?,
        ),
        DatumType::I64 => (
            TensorType::I64,
            bytes_of::<i64, 8>(value, i64::to_le_bytes)?,
        ),
        other => {
            // Other integers are carried as i64 (a u64 above i64::MAX wraps).
            let cast = value
                .cast_to_dt(DatumType::I64)
                .map_err(|_| format!("{other:?} cannot be carried by a WASI-NN tensor"))?;
            (
                TensorType::I64,
                bytes_of::<i64, 8>(&cast, i64::to_le_bytes)?,
            )
        }
    };
    Ok(Tensor::new(dimensions, ty, data))
}

fn bytes_of<T: Datum + Copy, const N: usize>(
    value: &tract_onnx::prelude::Tensor,
    to: fn(T) -> [u8; N],
) -> Result<Vec<u8>, String> {
    let view = value.to_plain_array_view::<T>().map_err(|e| one_line(&e))?;
    Ok(view.iter().flat_map(|&x| to(x)).collect())
}
