//! Classifies one iris flower with an ONNX model it reads itself, through
//! `wasi_ephemeral_nn` (`load` from bytes, as WasmEdge's ONNX examples do):
//!
//! `nn_onnx_p1 --model PATH A B C D` reads PATH (in a preopened directory),
//! loads it as an ONNX graph for the CPU, sets input 0 to the four features
//! as an f32 tensor of dimensions [1, 4], computes, and prints output 0 (the
//! class label, an i64) as `label=N`.
//!
//! Errors print `error: MESSAGE` on stderr and exit 1.

use std::process::ExitCode;

use wasmedge_wasi_nn::{ExecutionTarget, GraphBuilder, GraphEncoding, TensorType};

fn main() -> ExitCode {
    match run() {
        Ok(label) => {
            println!("label={label}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<i64, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, features) = match &args[..] {
        [flag, path, features @ ..] if flag == "--model" && features.len() == 4 => (path, features),
        _ => return Err("usage: nn_onnx_p1 --model PATH A B C D".into()),
    };
    let features = features
        .iter()
        .map(|f| f.parse::<f32>().map_err(|_| format!("not a number: {f:?}")))
        .collect::<Result<Vec<f32>, String>>()?;
    let model = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;

    let graph = GraphBuilder::new(GraphEncoding::Onnx, ExecutionTarget::CPU)
        .build_from_bytes([&model])
        .map_err(|e| e.to_string())?;
    let mut context = graph.init_execution_context().map_err(|e| e.to_string())?;
    context
        .set_input(0, TensorType::F32, &[1, 4], &features)
        .map_err(|e| e.to_string())?;
    context.compute().map_err(|e| e.to_string())?;
    // Room for more than the one label expected, to tell a wrong shape from
    // a short buffer.
    let mut labels = [0i64; 16];
    let size = context
        .get_output(0, &mut labels)
        .map_err(|e| e.to_string())?;
    if size != size_of::<i64>() {
        return Err(format!("output 0 has {size} bytes, expected one i64"));
    }
    Ok(labels[0])
}
