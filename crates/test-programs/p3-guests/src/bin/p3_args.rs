//! Prints its arguments (`wasi:cli/environment.get-arguments`, program name
//! first), one per line, then its environment variables as `KEY=VALUE`
//! lines, sorted. Then, if an argument is `--exit=N`, exits with code N
//! (`wasi:cli/exit.exit-with-code`); else, if one is `--fail`, `run` returns
//! an error (exit code 1).
use wasip3::cli::environment;

struct Args;

impl wasip3::exports::cli::run::Guest for Args {
    async fn run() -> Result<(), ()> {
        let args = environment::get_arguments();
        let mut vars = environment::get_environment();
        vars.sort();
        let mut text = String::new();
        for arg in &args {
            text.push_str(arg);
            text.push('\n');
        }
        for (key, value) in &vars {
            text.push_str(&format!("{key}={value}\n"));
        }
        tern_p3_guests::print(text).await;

        if let Some(code) = args.iter().find_map(|arg| arg.strip_prefix("--exit=")) {
            match code.parse() {
                Ok(code) => tern_p3_guests::exit(code),
                Err(_) => return tern_p3_guests::fail(&format!("bad exit code {code:?}"), 2).await,
            }
        }
        if args.iter().any(|arg| arg == "--fail") {
            return Err(());
        }
        Ok(())
    }
}

wasip3::cli::command::export!(Args);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_args runs through wasi:cli/run@0.3.0");
}
