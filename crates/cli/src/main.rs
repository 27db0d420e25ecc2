//! The `tern` command line: parses arguments, hands resolved configuration to
//! `tern-runtime` and `tern-http`, prints results and errors, and picks the exit code. This
//! is the only crate that prints.

mod admin_client;
mod apps;
mod build;
mod call;
mod compile;
mod compiling;
mod compose;
mod deploy;
mod exit;
mod host;
mod kv;
mod log;
mod new;
mod nn;
mod reload;
mod run;
mod serve;
mod up;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc's per-thread free lists suit a server whose requests allocate
/// and free in microseconds on the thread that serves them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run WebAssembly outside the browser, sandboxed by default.
#[derive(Parser)]
#[command(name = "tern", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Run `tern help <COMMAND>` for the options of a command.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI program (core module, component or .wat) in a sandbox
    Run(run::RunArgs),
    /// Call one function of a plugin (Extism plugin, component or module) and print its output
    Call(call::CallArgs),
    /// Serve an HTTP app described by a manifest (tern.toml)
    Serve(serve::ServeArgs),
    /// Compile a program ahead of time into an artifact only this installation trusts
    Compile(compile::CompileArgs),
    /// Create a new app from a template (`tern new --list` shows them)
    New(new::NewArgs),
    /// Build an app's components with the commands in its manifest
    Build(build::BuildArgs),
    /// Build an app, then serve it; --watch rebuilds and swaps on change
    Up(up::UpArgs),
    /// Make one component from an app and the library components it imports
    Compose(compose::ComposeArgs),
    /// Read and write an app's key-value stores
    Kv(kv::KvArgs),
    /// Serve many apps in one process, deployed through an admin API
    Host(host::HostArgs),
    /// Build an app and upload it to a `tern host`, replacing its running version
    Deploy(deploy::DeployArgs),
    /// List, show, delete and roll back the apps of a `tern host`
    Apps(apps::AppsArgs),
}

/// Raises the soft limit on open files to the hard one, as Go programs and
/// most servers do: a server holds a descriptor per connection, and each
/// loaded module's code is mapped from its compile cache file, kept open.
/// The common soft default of 1,024 would stop a `tern host` with a
/// thousand loaded apps from accepting connections. Failing to raise it
/// changes nothing else.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// Turns transparent huge pages off for this process, as Redis and most
/// latency-minded servers advise; `tern host` does, as it loads and unloads
/// apps all day. The allocator asks for huge pages for its heap; the kernel
/// then zeroes 2 MiB at the first touch of each, or compacts memory to find
/// one, and the request that happens to grow the heap (often an app's cold
/// load) waits for it: 5 to 28 ms, where a load takes half a millisecond.
/// wasmtime does not ask for them for linear memories, whose slots are
/// reset page by page. `tern serve`, whose heap stops growing once it is
/// warm, keeps them: they are worth about 2.5% of its hello's requests per
/// second. Failing to turn them off changes nothing else.
fn no_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn main() -> ExitCode {
    // The compiling child process (`compiling::child`), not a command
    // people type.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == tern_runtime::CHILD_COMMAND)
    {
        return compiling::child(&args[2..]);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Up(_) | Command::Host(_)
    ) {
        raise_open_file_limit();
    }
    if matches!(cli.command, Command::Host(_)) {
        no_transparent_huge_pages();
    }
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Call(args) => call::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Compile(args) => compile::main(args),
        Command::New(args) => new::main(args),
        Command::Build(args) => build::main(args),
        Command::Up(args) => up::main(args),
        Command::Compose(args) => compose::main(args),
        Command::Kv(args) => kv::main(args),
        Command::Host(args) => host::main(args),
        Command::Deploy(args) => deploy::main(args),
        Command::Apps(args) => apps::main(args),
    };
    result.unwrap_or_else(|err| {
        exit::print_error(&err);
        exit::TERN_ERROR
    })
}
