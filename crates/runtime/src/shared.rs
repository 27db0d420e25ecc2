//! Programs shared by everyone who loads the same code for one engine: a
//! host whose apps run the same binary (one template deployed under many
//! names) keeps one copy of its compiled metadata and maps its code once,
//! not once per app.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use wasmtime::Engine;

use crate::program::Program;

/// The programs loaded from the compile cache for one engine, each kept for
/// as long as someone holds its [`Held`].
pub struct ProgramShare {
    engine: Engine,
    kept: Mutex<Kept>,
}

struct Kept {
    /// By the path of the cache entry the code came from, which names the
    /// wasm's content, the engine's configuration and Tern's version.
    programs: HashMap<PathBuf, Weak<Held>>,
    /// Entries whose programs were all dropped are swept out when the map
    /// reaches this size.
    sweep_at: usize,
}

/// A shared program, alive while anyone holds this: keep it for as long as
/// the program (or anything made from it) is in use.
pub struct Held(Program);

impl Held {
    /// The program.
    pub fn program(&self) -> &Program {
        &self.0
    }
}

impl ProgramShare {
    /// Sweeps start when this many entries are in the map.
    const FIRST_SWEEP: usize = 64;

    /// A share for programs of `engine`.
    pub fn new(engine: &Engine) -> Self {
        ProgramShare {
            engine: engine.clone(),
            kept: Mutex::new(Kept {
                programs: HashMap::new(),
                sweep_at: Self::FIRST_SWEEP,
            }),
        }
    }

    /// Whether programs for `engine` may be shared here.
    pub(crate) fn serves(&self, engine: &Engine) -> bool {
        Engine::same(&self.engine, engine)
    }

    /// The program loaded from `entry`, if someone still holds it.
    pub(crate) fn find(&self, entry: &Path) -> Option<Arc<Held>> {
        self.lock().programs.get(entry).and_then(Weak::upgrade)
    }

    /// Keeps `program`, loaded from `entry`, for the next load of the
    /// same code, and gives what holds it; a program someone loaded from
    /// the same entry in the meantime is kept instead, and given.
    pub(crate) fn keep(&self, entry: &Path, program: Program) -> Arc<Held> {
        let mut kept = self.lock();
        if let Some(held) = kept.programs.get(entry).and_then(Weak::upgrade) {
            return held;
        }
        let held = Arc::new(Held(program));
        kept.programs
            .insert(entry.to_path_buf(), Arc::downgrade(&held));
        if kept.programs.len() >= kept.sweep_at {
            kept.programs.retain(|_, held| held.strong_count() > 0);
            kept.sweep_at = (kept.programs.len() * 2).max(Self::FIRST_SWEEP);
        }
        held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
