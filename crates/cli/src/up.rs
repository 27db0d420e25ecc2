//! `tern up`: build the app, then serve it; with `--watch`, rebuild and
//! swap in each component whose sources change, without dropping requests.

use std::process::ExitCode;

use clap::Args;
use tern_manifest::LoadOptions;
use tern_runtime::Result;

use crate::build;
use crate::reload::Watch;
use crate::serve::{self, ServeArgs};

/// Arguments of `tern up`.
#[derive(Args)]
#[command(
    after_help = "A component whose `build.watch` files, build command and built `source` are \
unchanged since its last successful build is not built again (`tern build` always builds). \
With --watch, a change to a file matching a component's `build.watch` \
globs rebuilds that component and swaps the new code in: requests in flight finish on the old \
code, new requests get the new code. A build that fails is reported and the old code keeps \
serving. Editing tern.toml reloads the app."
)]
pub struct UpArgs {
    /// Rebuild and swap in components when their watched files change
    #[arg(long)]
    watch: bool,
    /// Serve what is already built
    #[arg(long, conflicts_with = "watch")]
    no_build: bool,
    /// Builds to run at once [default: one per CPU]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: Option<u32>,
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn main(args: UpArgs) -> Result<ExitCode> {
    crate::log::set_format(args.serve.log_format);
    // A port already taken is found before a build, not after it.
    let listen = args.serve.listen;
    drop(
        std::net::TcpListener::bind(listen).map_err(|e| {
            tern_runtime::Error::from(e).context(format!("cannot listen on {listen}"))
        })?,
    );
    // So is a TLS certificate or key that cannot be used.
    args.serve.tls()?;
    let jobs = args.jobs.map_or_else(build::default_jobs, |n| n as usize);
    if !args.no_build {
        // Refused before building, not after, if it reaches outside the
        // app directory without the operator's leave.
        let options = LoadOptions {
            unbuilt: true,
            ..serve::serving(&args.serve.runtime_config()?)
        };
        let manifest = tern_manifest::load_with(&args.serve.path, options)?;
        // What was built from the files it watches as they are now needs no
        // build (`tern build` builds anyway).
        let (fresh, stale): (Vec<_>, Vec<_>) = build::choose(&manifest, &[])?
            .into_iter()
            .partition(build::Job::is_up_to_date);
        for job in &fresh {
            crate::log::say(&format!("tern: {} is up to date", job.id));
        }
        if !stale.is_empty() {
            build::build(&stale, jobs)?;
        }
    }
    let watch = args.watch.then_some(Watch { jobs });
    serve::serve(args.serve, watch)
}
