//! Swapping a new version of the app in while serving: on SIGHUP, or when
//! `tern up --watch` sees a component's sources change. One reload runs at
//! a time, off the serving threads; requests that arrive meanwhile coalesce
//! into the next one. A reload that fails leaves the running version
//! serving.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use tern_http::{AppSlot, ServeConfig, TlsConfig, TlsSlot};
use tern_runtime::{Loader, Result};
use tokio::sync::mpsc;

use crate::{build, compiling, serve, watch};

/// Everything a reload needs: where the manifest is and how to load it.
pub(crate) struct Reloader {
    pub(crate) manifest: PathBuf,
    pub(crate) config: ServeConfig,
    pub(crate) no_cache: bool,
    pub(crate) compile_limits: tern_runtime::CompileLimits,
    pub(crate) slot: AppSlot,
    /// Where the TLS certificate and key go, when serving TLS.
    pub(crate) tls: Option<TlsSlot>,
}

/// `tern up --watch`: rebuild and reload when watched files change.
pub(crate) struct Watch {
    /// Builds to run at once.
    pub(crate) jobs: usize,
}

/// Asks for reloads; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reloads(mpsc::UnboundedSender<Vec<String>>);

impl Reloads {
    /// Reloads the app after rebuilding the components named in `rebuild`
    /// (none: re-read the manifest and binaries only).
    pub(crate) fn request(&self, rebuild: Vec<String>) {
        let _ = self.0.send(rebuild);
    }
}

/// Starts the reload task on the current runtime and, with `watch`, the
/// file watcher feeding it.
pub(crate) fn start(reloader: Reloader, watch: Option<Watch>) -> Result<Reloads> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
    let reloads = Reloads(tx);
    let jobs = watch.as_ref().map_or(1, |w| w.jobs);
    if watch.is_some() {
        let manifest = tern_manifest::load_with(&reloader.manifest, build::UNBUILT)?;
        watch::start(&manifest, reloads.clone())?;
        crate::log::say(
            "tern: watching for changes; edits rebuild and swap in the changed components",
        );
    }
    tokio::spawn(async move {
        let reloader = std::sync::Arc::new(reloader);
        while let Some(first) = rx.recv().await {
            let mut rebuild: BTreeSet<String> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                rebuild.extend(more);
            }
            let reloader = reloader.clone();
            let outcome =
                tokio::task::spawn_blocking(move || reloader.reload(&rebuild, jobs)).await;
            let why = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => {
                    let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
                    chain.join(": ")
                }
                Err(_) => "the reload stopped unexpectedly (a bug in Tern)".to_owned(),
            };
            crate::log::say(&format!(
                "tern: reload failed, still serving the previous version: {why}"
            ));
        }
    });
    Ok(reloads)
}

impl Reloader {
    /// Rebuilds `rebuild`, loads the manifest and every component again,
    /// and swaps the result in. Blocks; runs off the serving threads.
    fn reload(&self, rebuild: &BTreeSet<String>, jobs: usize) -> Result<()> {
        let started = Instant::now();
        if rebuild.is_empty() {
            crate::log::say(&format!("tern: reloading {}", self.manifest.display()));
        } else {
            let names: Vec<&str> = rebuild.iter().map(String::as_str).collect();
            crate::log::say(&format!("tern: change in {}; rebuilding", names.join(", ")));
            let manifest = tern_manifest::load_with(&self.manifest, build::UNBUILT)?;
            let only: Vec<String> = rebuild
                .iter()
                .filter(|id| {
                    manifest
                        .components
                        .get(*id)
                        .is_some_and(|c| c.build.is_some())
                })
                .cloned()
                .collect();
            if !only.is_empty() {
                build::build(&build::choose(&manifest, &only)?, jobs)?;
            }
        }
        // The certificate and key first: a renewed certificate is swapped
        // in with the app, or neither is.
        let tls = self
            .config
            .tls
            .as_ref()
            .map(TlsConfig::reload)
            .transpose()?;
        let mut manifest =
            tern_manifest::load_with(&self.manifest, serve::serving(&self.config.runtime))?;
        serve::fetch_sources(&mut manifest)?;
        let (cache, _disabled) = compiling::open_cache(self.no_cache)?;
        let loader = Loader {
            cache: cache.as_ref(),
            limits: Some(&self.compile_limits),
            ..Loader::default()
        };
        let notes = compiling::ServeNotes::reload(cache.is_some());
        let app = self
            .slot
            .current()
            .reload_noting(&manifest, &self.config, &loader, &notes)?;
        let mut out = format!(
            "tern: reloaded in {:.1}s; new requests get the new version\n",
            started.elapsed().as_secs_f64()
        );
        serve::print_app(&app, &mut out);
        serve::print_outside(&manifest, &mut out);
        serve::print_unused(&self.config.runtime, &manifest, &mut out);
        self.slot.replace(app);
        if let (Some(slot), Some(tls)) = (&self.tls, tls) {
            out.push_str(&format!(
                "  TLS certificate {} re-read\n",
                tls.cert_file().display()
            ));
            slot.replace(tls);
        }
        crate::log::say(&out);
        Ok(())
    }
}
