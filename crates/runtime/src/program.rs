//! Turning a file into something runnable: detect what it is (core module,
//! component, WAT text, sealed artifact), then compile it or take it from the
//! compile cache. A core module that carries its component type is made a
//! component first ([`crate::componentize`]), under its own hash in the
//! cache.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_manifest::ByteSize;
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::{Engine, Module, Result, bail};

use crate::artifact::{self, ArtifactError, ArtifactKind, Binding, SigningKey};
use crate::cache::{CompileCache, Entry, Lookup};
use crate::compiler::{CompileLimits, compile_in_child};
use crate::declared::Declared;
use crate::engine::EngineSpec;
use crate::shared::{Held, ProgramShare};
use crate::stat_index::{FileStamp, Recalled};

/// A compiled guest, ready to instantiate. Clones share the compiled code.
#[derive(Clone)]
pub enum Program {
    /// A WASI preview 1 core module.
    Module(Module),
    /// A WASI 0.2 component.
    Component(Component),
}

/// How the compiled code was obtained.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeSource {
    /// Compiled now; caching was off.
    Compiled,
    /// Loaded from a verified cache entry.
    CacheHit,
    /// Compiled now and written to the cache.
    CacheMiss,
    /// A cache entry existed but did not verify; recompiled and replaced.
    CacheRejected(String),
    /// A sealed artifact from `tern compile`, verified.
    Precompiled,
    /// The program another load of the same code had made, still held
    /// (see [`ProgramShare`]).
    Shared,
}

/// A loaded program and what loading it cost.
pub struct Loaded {
    /// The program.
    pub program: Program,
    /// Where its code came from.
    pub source: CodeSource,
    /// Time spent reading and hashing the file.
    pub read_time: Duration,
    /// Time spent compiling, or reading, verifying and loading cached code.
    pub code_time: Duration,
    /// With a [`Loader::share`], what keeps the program shared: hold it
    /// for as long as the program is in use, so that the next load of
    /// the same code shares it rather than loading it again.
    pub held: Option<Arc<Held>>,
}

impl Loaded {
    /// A program loaded since `start`, `read_time` of it spent reading,
    /// with its memory images built (see [`Program::build_memory_images`]).
    fn since(
        start: Instant,
        program: Program,
        source: CodeSource,
        read_time: Duration,
    ) -> Result<Self> {
        program.build_memory_images()?;
        Ok(Loaded {
            program,
            source,
            read_time,
            code_time: start.elapsed() - read_time,
            held: None,
        })
    }

    /// A load that found `held` in the share.
    fn held(start: Instant, held: Arc<Held>, read_time: Duration) -> Result<Self> {
        let mut loaded =
            Loaded::since(start, held.program().clone(), CodeSource::Shared, read_time)?;
        loaded.held = Some(held);
        Ok(loaded)
    }

    /// This load, its program kept in `share` (when there is one) as the
    /// code of cache entry `entry`.
    fn kept(mut self, share: Option<&ProgramShare>, entry: &Path) -> Self {
        if let Some(share) = share {
            let held = share.keep(entry, self.program);
            self.program = held.program().clone();
            self.held = Some(held);
        }
        self
    }
}

impl Program {
    /// How many times building the memory images is tried when the kernel
    /// reports its pages busy.
    const IMAGE_ATTEMPTS: u32 = 4;

    /// Builds the copy-on-write images of the program's initial memories
    /// now, rather than lazily in its first instantiation. For code not
    /// mapped from a cache file (compiled here or in a child, or copied
    /// from bytes), wasmtime writes each image into a memfd and seals it;
    /// the kernel refuses the write seal with `EBUSY` while anything else
    /// still holds a reference to one of the fresh pages (reclaim,
    /// compaction or another core's page batch), which is rare and passes.
    /// Here such a refusal is tried again, and an error that stays is the
    /// load's, not a request's.
    fn build_memory_images(&self) -> Result<()> {
        let mut attempt = 1;
        loop {
            let built = match self {
                Program::Module(module) => module.initialize_copy_on_write_image(),
                Program::Component(component) => component.initialize_copy_on_write_image(),
            };
            match built {
                Err(e) if attempt < Self::IMAGE_ATTEMPTS && pages_busy(&e) => attempt += 1,
                built => return built.context("building the initial memory images"),
            }
        }
    }
}

/// Whether `e` comes from the kernel finding pages busy (`EBUSY`).
fn pages_busy(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ResourceBusy)
    })
}

/// The shape of a binary, from its header.
enum Binary {
    Module,
    Component,
}

fn classify(bytes: &[u8]) -> Result<Binary> {
    match bytes {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => Ok(Binary::Module),
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Ok(Binary::Component),
        [0, b'a', b's', b'm', ..] if bytes.len() < 8 => bail!("truncated WebAssembly header"),
        _ => bail!("unsupported WebAssembly binary version"),
    }
}

/// How to turn files into programs: where compiled code is cached, which key
/// verifies sealed artifacts, and who to tell before a compile starts.
#[derive(Clone, Copy, Default)]
pub struct Loader<'a> {
    /// The compile cache; `None` compiles every time.
    pub cache: Option<&'a CompileCache>,
    /// Verifies sealed artifacts; defaults to the cache's key.
    pub key: Option<&'a SigningKey>,
    /// Called with the wasm size just before compiling, for progress notes.
    pub on_compile: Option<&'a dyn Fn(usize)>,
    /// Bounds on the file and on compiling it; `None` reads files of any
    /// size and compiles in this process.
    pub limits: Option<&'a CompileLimits>,
    /// The engine's configuration, which a compiling child process needs to
    /// build code for it; `None` compiles in this process.
    pub spec: Option<EngineSpec>,
    /// The files this loader reads are written once and never changed (a
    /// host's version directories), so the stat index may remember a file
    /// as soon as it is loaded, not only once its timestamps have settled:
    /// the first load after a deploy then finds its code without reading
    /// and hashing the module again.
    pub written_once: bool,
    /// Programs this engine already has loaded from the cache, shared with
    /// loads of the same code; `None` loads every time. A share made for
    /// another engine is not used.
    pub share: Option<&'a ProgramShare>,
}

impl Loader<'_> {
    /// Reads `path` and compiles it, or takes its code from the cache.
    /// Sealed artifacts are verified; raw wasmtime artifacts are refused.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Loaded> {
        let start = Instant::now();
        let cannot_read = || format!("cannot read `{}`", path.display());
        let mut file = File::open(path).with_context(cannot_read)?;
        let metadata = file.metadata().with_context(cannot_read)?;
        if let Some(limits) = self.limits
            && metadata.len() > limits.max_module_size.0
        {
            bail!(
                "`{}` is {}, above the module size limit of {} (--max-module-size)",
                path.display(),
                ByteSize(metadata.len()),
                limits.max_module_size
            );
        }
        let stamp = FileStamp::of(&metadata);
        let loaded = |program, source, read_time| Loaded::since(start, program, source, read_time);

        // Every seal binds the engine the code was compiled for.
        let engine_hash = artifact::engine_hash(engine);

        // Warm path: the stat index knows this file's content hash, and the
        // program is still loaded from the entry for it, or the entry
        // verifies. The module itself is never read.
        if let Some(cache) = self.cache
            && let Some(Recalled { content, .. }) = cache.recall(&stamp)
        {
            let path = cache.entry_path(engine, &content);
            if let Some(held) = self.share(engine).and_then(|share| share.find(&path)) {
                return Loaded::held(start, held, Duration::ZERO);
            }
            let binding = Binding {
                wasm: content,
                engine: engine_hash,
            };
            if let Lookup::Hit(entry) = cache.lookup(&path, &binding)
                && let Ok(program) = deserialize_entry(engine, &entry)
            {
                return Ok(loaded(program, CodeSource::CacheHit, Duration::ZERO)?
                    .kept(self.share(engine), &path));
            }
        }

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).with_context(cannot_read)?;
        self.load_read(engine, bytes, start, Some(&stamp))
    }

    /// What the binary at `path` declares, for deciding how to load it
    /// before loading it: from the stat index when it remembers this
    /// version of the file (the file is not read), else read from the file.
    pub fn declared(&self, path: &Path) -> std::io::Result<Declared> {
        if let Some(cache) = self.cache
            && let Some(recalled) = cache.recall(&FileStamp::of(&std::fs::metadata(path)?))
        {
            return Ok(recalled.declared);
        }
        Ok(Declared::of(&std::fs::read(path)?))
    }

    /// Compiles `bytes` (a module, a component, WAT text or a sealed
    /// artifact), or takes its code from the cache, as [`Loader::load`]
    /// does for a file.
    pub fn load_bytes(&self, engine: &Engine, bytes: Vec<u8>) -> Result<Loaded> {
        self.load_read(engine, bytes, Instant::now(), None)
    }

    fn load_read(
        &self,
        engine: &Engine,
        bytes: Vec<u8>,
        start: Instant,
        stamp: Option<&FileStamp>,
    ) -> Result<Loaded> {
        let loaded = |program, source, read_time| Loaded::since(start, program, source, read_time);
        let engine_hash = artifact::engine_hash(engine);
        let remember = |cache: &CompileCache, content: &[u8; 32], wasm: &[u8]| {
            if let Some(stamp) = stamp {
                let what = Recalled {
                    content: *content,
                    declared: Declared::of(wasm),
                };
                cache.remember(stamp, &what, self.written_once);
            }
        };

        if artifact::is_sealed(&bytes) {
            let key = self
                .key
                .or(self.cache.map(CompileCache::key))
                .context("no signing key to verify a precompiled artifact")?;
            let (kind, payload) = match key.open(&bytes, &Binding::precompiled(engine_hash)) {
                Err(ArtifactError::Engine) => bail!(ENGINE_MISMATCH),
                opened => opened.context("refusing to load precompiled artifact")?,
            };
            let read_time = start.elapsed();
            let program = deserialize(engine, kind, payload).context(ENGINE_MISMATCH)?;
            return loaded(program, CodeSource::Precompiled, read_time);
        }
        if Engine::detect_precompiled(&bytes).is_some() {
            bail!(
                "refusing to load a precompiled artifact that tern did not write; run the .wasm, or make one with `tern compile`"
            );
        }
        let wasm = match std::str::from_utf8(&bytes) {
            _ if bytes.starts_with(b"\0asm") => bytes,
            Ok(text) if crate::declared::looks_like_wat(text) => {
                wat::parse_str(text).map_err(|e| wasmtime::format_err!("{e}"))?
            }
            _ => bail!("not a WebAssembly binary, .wat text or tern artifact"),
        };
        let binary = classify(&wasm)?;

        let Some(cache) = self.cache else {
            let read_time = start.elapsed();
            let (program, _) = self.compile(engine, &binary, &wasm)?;
            return loaded(program, CodeSource::Compiled, read_time);
        };
        let content = *blake3::hash(&wasm).as_bytes();
        let binding = Binding {
            wasm: content,
            engine: engine_hash,
        };
        let entry = cache.entry_path(engine, &content);
        let read_time = start.elapsed();
        let share = self.share(engine);
        if let Some(held) = share.and_then(|share| share.find(&entry)) {
            remember(cache, &content, &wasm);
            return Loaded::held(start, held, read_time);
        }
        let source = match cache.lookup(&entry, &binding) {
            Lookup::Hit(found) => match deserialize_entry(engine, &found) {
                Ok(program) => {
                    remember(cache, &content, &wasm);
                    return Ok(
                        loaded(program, CodeSource::CacheHit, read_time)?.kept(share, &entry)
                    );
                }
                Err(e) => CodeSource::CacheRejected(format!("{e}")),
            },
            Lookup::Rejected(why) => CodeSource::CacheRejected(why),
            Lookup::Miss => CodeSource::CacheMiss,
        };
        let (program, serialized) = self.compile(engine, &binary, &wasm)?;
        let (kind, payload) = match serialized {
            Some(serialized) => serialized,
            None => serialize(&program)?,
        };
        // A cache that cannot be written only costs speed, never the run.
        if cache.store(&entry, kind, &payload, &binding).is_ok() {
            remember(cache, &content, &wasm);
        }
        Ok(loaded(program, source, read_time)?.kept(share, &entry))
    }

    /// The share, if it is for `engine`.
    fn share(&self, engine: &Engine) -> Option<&ProgramShare> {
        self.share.filter(|share| share.serves(engine))
    }

    /// Compiles `wasm`: in a child process bounded in memory and time when
    /// the loader has limits with a child and the engine's spec, which also
    /// hands back the serialized code; otherwise here.
    fn compile(
        &self,
        engine: &Engine,
        binary: &Binary,
        wasm: &[u8],
    ) -> Result<(Program, Option<Serialized>)> {
        if let Some(on_compile) = self.on_compile {
            on_compile(wasm.len());
        }
        let componentized;
        let (binary, wasm) = match binary {
            Binary::Module if crate::componentize::carries_component_type(wasm) => {
                componentized = crate::componentize::componentize(wasm)?;
                (&Binary::Component, &componentized[..])
            }
            _ => (binary, wasm),
        };
        if let (Some(limits), Some(spec)) = (self.limits, self.spec)
            && let Some(child) = &limits.child
        {
            let component = matches!(binary, Binary::Component);
            let code = compile_in_child(child, limits, spec, component, wasm)?;
            let kind = match binary {
                Binary::Module => ArtifactKind::Module,
                Binary::Component => ArtifactKind::Component,
            };
            let program = deserialize_compiled(engine, kind, &code)?;
            return Ok((program, Some((kind, code))));
        }
        let program = match binary {
            Binary::Module => Program::Module(Module::from_binary(engine, wasm)?),
            Binary::Component => Program::Component(Component::from_binary(engine, wasm)?),
        };
        Ok((program, None))
    }
}

/// Code as wasmtime serialized it, with what kind of program it is.
type Serialized = (ArtifactKind, Vec<u8>);

/// What a precompiled artifact for another engine configuration is told.
const ENGINE_MISMATCH: &str = "precompiled artifact does not match this engine; recompile it with `tern compile` options matching --fuel, --timeout and --max-stack";

/// Compiles `path` with `loader` (which must have a key) and seals the
/// result (`tern compile`).
pub fn precompile(engine: &Engine, path: &Path, loader: &Loader<'_>) -> Result<Vec<u8>> {
    let key = loader
        .key
        .context("no signing key to seal the artifact with")?;
    let loader = Loader {
        cache: None,
        ..*loader
    };
    let loaded = loader.load(engine, path)?;
    let (kind, payload) = serialize(&loaded.program)?;
    // Bound to the engine only: it runs without its wasm at hand.
    let binding = Binding::precompiled(artifact::engine_hash(engine));
    Ok(key.seal(kind, &payload, &binding))
}

fn serialize(program: &Program) -> Result<(ArtifactKind, Vec<u8>)> {
    Ok(match program {
        Program::Module(m) => (ArtifactKind::Module, m.serialize()?),
        Program::Component(c) => (ArtifactKind::Component, c.serialize()?),
    })
}

#[allow(unsafe_code)]
fn deserialize_compiled(engine: &Engine, kind: ArtifactKind, code: &[u8]) -> Result<Program> {
    // SAFETY: `code` is what wasmtime serialized in the compiling child, a
    // process running this very program (`/proc/self/exe`), which read the
    // wasm from us and wrote the code to a pipe only we hold; it is in this
    // process's memory. wasmtime checks that it matches this engine.
    unsafe {
        Ok(match kind {
            ArtifactKind::Module => Program::Module(Module::deserialize(engine, code)?),
            ArtifactKind::Component => Program::Component(Component::deserialize(engine, code)?),
        })
    }
}

/// The code of a verified cache entry, mapped from the entry's file, so
/// that its pages are the page cache's (shared by every app with the same
/// binary, and dropped by the kernel under pressure rather than swapped);
/// from the verified bytes, copied, where mapping fails (a process at its
/// limit of open files, a component's file that cannot be reopened through
/// `/proc/self/fd`).
fn deserialize_entry(engine: &Engine, entry: &Entry) -> Result<Program> {
    deserialize_mapped(engine, entry)
        .or_else(|_| deserialize(engine, entry.kind(), entry.payload()))
}

/// [`deserialize_entry`]'s mapping: a module from a duplicate of the
/// entry's open descriptor, a component (wasmtime takes only a path for
/// one) through `/proc/self/fd/N` for it, once that names the same inode
/// and length that were verified.
#[allow(unsafe_code)]
fn deserialize_mapped(engine: &Engine, entry: &Entry) -> Result<Program> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::io::AsRawFd as _;

    let file = entry.file();
    let reopen = format!("/proc/self/fd/{}", file.as_raw_fd());
    if entry.kind() == ArtifactKind::Component {
        let (open, again) = (file.metadata()?, std::fs::metadata(&reopen)?);
        let same = open.dev() == again.dev()
            && open.ino() == again.ino()
            && again.len() == entry.verified_len();
        if !same {
            bail!("`{reopen}` is not the entry that was verified");
        }
    }
    // SAFETY: the file's seal verified under this user's key and binds it
    // to this wasm and this engine's configuration (see `deserialize`),
    // and what is mapped is that same inode, not whatever the path names
    // now. The file is a regular file of this user's that nobody else may
    // write, and tern never writes an entry in place (a new entry is a new
    // file renamed over the path), so its bytes stay the ones verified. The
    // only ones who could change them in place are this user and root, and
    // they can read the key and seal code of their own anyway: the seal
    // guards against everyone else, and so does the mapping. wasmtime maps
    // the file copy-on-write and applies no relocations to the code, so the
    // code pages stay the file's. The seal's trailer after wasmtime's ELF
    // image is outside every section wasmtime reads.
    unsafe {
        Ok(match entry.kind() {
            ArtifactKind::Module => {
                Program::Module(Module::deserialize_open_file(engine, file.try_clone()?)?)
            }
            ArtifactKind::Component => {
                Program::Component(Component::deserialize_file(engine, &reopen)?)
            }
        })
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, kind: ArtifactKind, payload: &[u8]) -> Result<Program> {
    // SAFETY: `payload` comes from a sealed artifact whose MAC verified under
    // this user's key, so tern itself wrote it from wasmtime's own output,
    // for this engine's configuration (the seal binds the engine hash). It is
    // in this process's memory, read once and then verified, so no later
    // write to the file can change it; wasmtime copies it into a mapping of
    // its own and checks that it matches this engine's version and config.
    unsafe {
        Ok(match kind {
            ArtifactKind::Module => Program::Module(Module::deserialize(engine, payload)?),
            ArtifactKind::Component => Program::Component(Component::deserialize(engine, payload)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_pages_are_told_apart_from_other_failures() {
        let ebusy = || std::io::Error::from_raw_os_error(rustix::io::Errno::BUSY.raw_os_error());
        let busy = wasmtime::Error::from(ebusy()).context("cannot add seals to the memfd");
        assert!(pages_busy(&busy));
        // As wasmtime reports it: the `memfd` crate's error, whose source
        // is the kernel's.
        #[derive(Debug)]
        struct AddSeals(std::io::Error);
        impl std::fmt::Display for AddSeals {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot add seals to the memfd")
            }
        }
        impl std::error::Error for AddSeals {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(pages_busy(&wasmtime::Error::from(AddSeals(ebusy()))));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!pages_busy(&wasmtime::Error::from(denied)));
        assert!(!pages_busy(&wasmtime::format_err!("out of slots")));
    }

    #[test]
    fn a_cached_load_remembers_what_the_binary_declares() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("key")).unwrap();
        let cache = CompileCache::new(dir.path().join("cache"), key).unwrap();
        let loader = Loader {
            cache: Some(&cache),
            written_once: true,
            ..Loader::default()
        };
        let path = dir.path().join("p3.wat");
        std::fs::write(
            &path,
            r#"(component
                 (import "wasi:clocks/monotonic-clock@0.3.0" (instance))
                 (core module (memory 2))
                 (@producers (processed-by "ComponentizeJS" "0.22.0")))"#,
        )
        .unwrap();
        let declared = Declared {
            wasi_p3: true,
            initial_memory: Some(2 << 16),
            one_request_per_instance: true,
        };
        let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());

        // Before a load, the file is read.
        assert!(cache.recall(&stamp).is_none());
        assert_eq!(loader.declared(&path).unwrap(), declared);

        // A load indexes the file, with what it declares; a later load
        // (a host's cold start) takes both from the index.
        let engine = Engine::default();
        let first = loader.load(&engine, &path).unwrap();
        assert!(matches!(first.source, CodeSource::CacheMiss));
        assert_eq!(cache.recall(&stamp).unwrap().declared, declared);
        assert_eq!(loader.declared(&path).unwrap(), declared);
        let again = loader.load(&engine, &path).unwrap();
        assert!(matches!(again.source, CodeSource::CacheHit));
    }

    #[test]
    fn loads_of_the_same_code_share_one_program_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("key")).unwrap();
        let cache = CompileCache::new(dir.path().join("cache"), key).unwrap();
        let engine = Engine::default();
        let share = ProgramShare::new(&engine);
        let loader = Loader {
            cache: Some(&cache),
            written_once: true,
            share: Some(&share),
            ..Loader::default()
        };
        let hello = r#"(module (memory (export "memory") 1) (data (i32.const 8) "hello"))"#;
        let (one, two) = (dir.path().join("one.wat"), dir.path().join("two.wat"));
        std::fs::write(&one, hello).unwrap();
        std::fs::write(&two, hello).unwrap();

        // Two files with the same code (two apps of one template): the
        // second load, of a file never seen, shares the first's program.
        let first = loader.load(&engine, &one).unwrap();
        assert!(matches!(first.source, CodeSource::CacheMiss));
        let second = loader.load(&engine, &two).unwrap();
        assert!(matches!(second.source, CodeSource::Shared));
        // Indexed, the first file is found shared without reading it.
        assert!(matches!(
            loader.load(&engine, &one).unwrap().source,
            CodeSource::Shared
        ));
        // One program, which runs, its memory initialized.
        let (Program::Module(module), Program::Module(original)) =
            (&second.program, &first.program)
        else {
            panic!("not a module");
        };
        assert!(Module::same(module, original));
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        assert_eq!(&memory.data(&store)[8..13], b"hello");

        // Once nobody holds it, the next load takes it from the cache.
        drop((first, second));
        assert!(matches!(
            loader.load(&engine, &one).unwrap().source,
            CodeSource::CacheHit
        ));

        // Another engine's loads do not use this share.
        let other = Engine::default();
        let held = loader.load(&engine, &one).unwrap();
        let elsewhere = loader.load(&other, &one).unwrap();
        assert!(matches!(elsewhere.source, CodeSource::CacheHit));
        assert!(elsewhere.held.is_none());
        drop(held);
    }
}
