//! Classifies with an ONNX model the host provides by name, through
//! `wasi:nn` (`graph.load-by-name`, one `compute` with named tensors):
//!
//! - `iris A B C D`: graph `iris`, the four features as an f32 tensor of
//!   dimensions [1, 4], passed by index (`"0"`, so any one-input classifier
//!   fits). Prints `label=N` from the i64 output `label` and, if the graph
//!   gives it, `probabilities=[P0, P1, P2]` from the f32 output
//!   `probability_tensor` (3 decimals).
//! - `magika PATH`: graph `magika`, Google's Magika file-type model
//!   (standard_v3_3), fed the features its Python package extracts from
//!   the file at PATH (in a preopened directory) as the i32 tensor `bytes`
//!   of dimensions [1, 2048]. Prints `label=NAME score=S` for the best
//!   score of the output `target_label` (2 decimals). This is the model's
//!   own answer: Magika's shortcuts for files under 8 bytes and its
//!   confidence thresholds are left out.
//! - `hoard PATH N`: loads the ONNX model at PATH from its bytes N times,
//!   each time making an execution context, which it keeps, and dropping
//!   the graph; prints `held N contexts`. The host must count each model
//!   while a context holds it.
//!
//! A wasi-nn error prints `error: CODE: MESSAGE` on stderr (CODE being the
//! `Debug` of wasi-nn's `error-code`, e.g. `NotFound`) and exits 1; so does
//! any other failure, with `error: MESSAGE`.

use tern_p3_guests::nn::{self, Error, Tensor, TensorType};
use wasip3::filesystem::preopens;
use wasip3::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};

/// Magika's standard_v3_3 features (`config.min.json`): the first and last
/// bytes of the file, whitespace stripped, out of at most one block at
/// each end, padded with a token that is no byte.
const MAGIKA_BEG_SIZE: usize = 1024;
const MAGIKA_END_SIZE: usize = 1024;
const MAGIKA_BLOCK_SIZE: usize = 4096;
const MAGIKA_PADDING: i32 = 256;

/// `target_labels_space` of Magika's standard_v3_3 `config.min.json`: the
/// label of each score in the model's output, in order.
#[rustfmt::skip]
const MAGIKA_LABELS: [&str; 214] = [
    "3gp", "ace", "ai", "aidl", "apk", "applebplist", "appleplist", "asm", "asp", "autohotkey",
    "autoit", "awk", "batch", "bazel", "bib", "bmp", "bzip", "c", "cab", "cat", "chm", "clojure",
    "cmake", "cobol", "coff", "coffeescript", "cpp", "crt", "crx", "cs", "csproj", "css", "csv",
    "dart", "deb", "dex", "dicom", "diff", "dm", "dmg", "doc", "dockerfile", "docx", "dsstore",
    "dwg", "dxf", "elf", "elixir", "emf", "eml", "epub", "erb", "erlang", "flac", "flv", "fortran",
    "gemfile", "gemspec", "gif", "gitattributes", "gitmodules", "go", "gradle", "groovy", "gzip",
    "h5", "handlebars", "haskell", "hcl", "hlp", "htaccess", "html", "icns", "ico", "ics",
    "ignorefile", "ini", "internetshortcut", "ipynb", "iso", "jar", "java", "javabytecode",
    "javascript", "jinja", "jp2", "jpeg", "json", "jsonl", "julia", "kotlin", "latex", "lha",
    "lisp", "lnk", "lua", "m3u", "m4", "macho", "makefile", "markdown", "matlab", "mht", "midi",
    "mkv", "mp3", "mp4", "mscompress", "msi", "mum", "npy", "npz", "nupkg", "objectivec", "ocaml",
    "odp", "ods", "odt", "ogg", "one", "onnx", "otf", "outlook", "parquet", "pascal", "pcap",
    "pdb", "pdf", "pebin", "pem", "perl", "php", "pickle", "png", "po", "postscript", "powershell",
    "ppt", "pptx", "prolog", "proteindb", "proto", "psd", "python", "pythonbytecode", "pytorch",
    "qt", "r", "randombytes", "randomtxt", "rar", "rdf", "rpm", "rst", "rtf", "ruby", "rust",
    "scala", "scss", "sevenzip", "sgml", "shell", "smali", "snap", "solidity", "sql", "sqlite",
    "squashfs", "srt", "stlbinary", "stltext", "sum", "svg", "swf", "swift", "tar", "tcl",
    "textproto", "tga", "thumbsdb", "tiff", "toml", "torrent", "tsv", "ttf", "twig", "txt",
    "typescript", "vba", "vcxproj", "verilog", "vhdl", "vtt", "vue", "wasm", "wav", "webm", "webp",
    "winregistry", "wmf", "woff", "woff2", "xar", "xls", "xlsb", "xlsx", "xml", "xpi", "xz",
    "yaml", "yara", "zig", "zip", "zlibstream",
];

/// Why the program failed.
enum Failure {
    Nn(Error),
    Other(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Nn(error)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Other(message)
    }
}

struct Classify;

impl wasip3::exports::cli::run::Guest for Classify {
    async fn run() -> Result<(), ()> {
        let args = tern_p3_guests::args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = match args[..] {
            ["iris", a, b, c, d] => iris([a, b, c, d]),
            ["magika", path] => magika(path).await,
            ["hoard", path, n] => hoard(path, n).await,
            _ => Err(Failure::Other(
                "usage: p3_nn_classify iris A B C D | magika PATH | hoard PATH N".into(),
            )),
        };
        match result {
            Ok(out) => {
                tern_p3_guests::print(out).await;
                Ok(())
            }
            Err(failure) => {
                let line = match failure {
                    Failure::Nn(error) => nn::describe(&error),
                    Failure::Other(message) => message,
                };
                tern_p3_guests::eprint(format!("error: {line}\n")).await;
                tern_p3_guests::exit(1)
            }
        }
    }
}

fn iris(features: [&str; 4]) -> Result<String, Failure> {
    let mut data = Vec::with_capacity(16);
    for feature in features {
        let value: f32 = feature
            .parse()
            .map_err(|_| format!("not a number: {feature:?}"))?;
        data.extend_from_slice(&value.to_le_bytes());
    }
    let input = Tensor::new(&[1, 4], TensorType::Fp32, &data);
    let outputs = compute("iris", vec![("0".into(), input)])?;

    let label = output(&outputs, "label", TensorType::I64)?;
    let label = label
        .data()
        .first_chunk::<8>()
        .map(|bytes| i64::from_le_bytes(*bytes))
        .ok_or_else(|| "output label is empty".to_owned())?;
    let mut out = format!("label={label}\n");
    if outputs.iter().any(|(name, _)| name == "probability_tensor") {
        let probabilities = output(&outputs, "probability_tensor", TensorType::Fp32)?;
        let probabilities: Vec<String> = f32s(&probabilities.data())
            .map(|p| format!("{p:.3}"))
            .collect();
        out.push_str(&format!("probabilities=[{}]\n", probabilities.join(", ")));
    }
    Ok(out)
}

async fn magika(path: &str) -> Result<String, Failure> {
    let content = read_file(path).await?;
    let features = magika_features(&content);
    let data: Vec<u8> = features.iter().flat_map(|f| f.to_le_bytes()).collect();
    let input = Tensor::new(&[1, features.len() as u32], TensorType::I32, &data);
    let outputs = compute("magika", vec![("bytes".into(), input)])?;

    let scores = output(&outputs, "target_label", TensorType::Fp32)?;
    let scores: Vec<f32> = f32s(&scores.data()).collect();
    if scores.len() != MAGIKA_LABELS.len() {
        return Err(Failure::Other(format!(
            "target_label has {} scores, expected {}",
            scores.len(),
            MAGIKA_LABELS.len()
        )));
    }
    // The first of equal scores wins, as in Magika's Python.
    let (best, score) =
        scores.iter().enumerate().fold(
            (0, f32::MIN),
            |(best, top), (i, &s)| {
                if s > top { (i, s) } else { (best, top) }
            },
        );
    Ok(format!("label={} score={score:.2}\n", MAGIKA_LABELS[best]))
}

async fn hoard(path: &str, n: &str) -> Result<String, Failure> {
    let n: usize = n.parse().map_err(|_| format!("not a count: {n:?}"))?;
    let model = read_file(path).await?;
    let mut contexts = Vec::with_capacity(n);
    for _ in 0..n {
        let graph = nn::graph::load(
            std::slice::from_ref(&model),
            nn::graph::GraphEncoding::Onnx,
            nn::graph::ExecutionTarget::Cpu,
        )?;
        contexts.push(graph.init_execution_context()?);
    }
    Ok(format!("held {} contexts\n", contexts.len()))
}

/// Loads graph `name`, and computes `inputs` in a new context.
fn compute(name: &str, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, Error> {
    let graph = nn::graph::load_by_name(name)?;
    let context = graph.init_execution_context()?;
    context.compute(inputs)
}

/// The output called `name`, which must be of type `ty`.
fn output<'a>(
    outputs: &'a [(String, Tensor)],
    name: &str,
    ty: TensorType,
) -> Result<&'a Tensor, String> {
    let (_, tensor) = outputs.iter().find(|(n, _)| n == name).ok_or_else(|| {
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        format!("no output {name:?} among {names:?}")
    })?;
    if tensor.ty() != ty {
        return Err(format!(
            "output {name:?} is {:?}, expected {ty:?}",
            tensor.ty()
        ));
    }
    Ok(tensor)
}

/// The little-endian f32s in `data`.
fn f32s(data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Magika's features for `content` (`_extract_features_from_seekable` in
/// its Python package): the first block, left-stripped, its first
/// `MAGIKA_BEG_SIZE` bytes padded at the end; then the last block,
/// right-stripped, its last `MAGIKA_END_SIZE` bytes padded at the start.
fn magika_features(content: &[u8]) -> Vec<i32> {
    let block = content.len().min(MAGIKA_BLOCK_SIZE);
    let beg = &content[..block];
    let beg = &beg[beg.iter().position(|&b| !is_space(b)).unwrap_or(beg.len())..];
    let beg = &beg[..beg.len().min(MAGIKA_BEG_SIZE)];
    let end = &content[content.len() - block..];
    let end = &end[..end.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1)];
    let end = &end[end.len() - end.len().min(MAGIKA_END_SIZE)..];

    let mut features = Vec::with_capacity(MAGIKA_BEG_SIZE + MAGIKA_END_SIZE);
    features.extend(beg.iter().map(|&b| i32::from(b)));
    features.resize(MAGIKA_BEG_SIZE, MAGIKA_PADDING);
    features.resize(
        MAGIKA_BEG_SIZE + MAGIKA_END_SIZE - end.len(),
        MAGIKA_PADDING,
    );
    features.extend(end.iter().map(|&b| i32::from(b)));
    features
}

/// Whitespace as Python's `bytes.strip()` sees it: unlike
/// `u8::is_ascii_whitespace`, it includes the vertical tab.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The contents of the file at `path`, in the preopened directory whose
/// guest path is the longest prefix of it.
async fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let (dir, relative) = preopens::get_directories()
        .into_iter()
        .filter_map(|(dir, guest)| {
            let relative = within(path, &guest)?.to_owned();
            Some((guest.len(), dir, relative))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, dir, relative)| (dir, relative))
        .ok_or_else(|| format!("{path}: in no preopened directory"))?;
    let file = dir
        .open_at(
            PathFlags::SYMLINK_FOLLOW,
            relative,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await
        .map_err(|code| format!("opening {path}: {code:?}"))?;
    let (contents, done) = file.read_via_stream(0);
    let contents = contents.collect().await;
    done.await
        .map_err(|code| format!("reading {path}: {code:?}"))?;
    Ok(contents)
}

/// `path` relative to the preopen at `guest`, if it is inside it.
fn within<'a>(path: &'a str, guest: &str) -> Option<&'a str> {
    match guest.trim_end_matches('/') {
        "" => path.strip_prefix('/'),
        "." => (!path.starts_with('/')).then(|| path.strip_prefix("./").unwrap_or(path)),
        guest => match path.strip_prefix(guest)? {
            "" => Some("."),
            rest => rest.strip_prefix('/'),
        },
    }
}

wasip3::cli::command::export!(Classify);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_nn_classify runs through wasi:cli/run@0.3.0");
}
