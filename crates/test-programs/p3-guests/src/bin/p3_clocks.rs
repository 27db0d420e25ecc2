//! `p3_clocks sleep MS`: waits MS milliseconds in the host
//! (`wasi:clocks/monotonic-clock.wait-for`), then prints `slept`.
//! `p3_clocks now`: prints the seconds since the Unix epoch
//! (`wasi:clocks/system-clock.now`). Anything else prints a usage line and
//! exits with code 2.
use wasip3::clocks::system_clock;

struct Clocks;

impl wasip3::exports::cli::run::Guest for Clocks {
    async fn run() -> Result<(), ()> {
        let args = tern_p3_guests::args();
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["sleep", ms] => {
                let Ok(ms) = ms.parse() else {
                    return tern_p3_guests::fail(&format!("not milliseconds: {ms:?}"), 2).await;
                };
                tern_p3_guests::sleep_ms(ms).await;
                tern_p3_guests::print("slept\n").await;
            }
            ["now"] => {
                let now = system_clock::now();
                tern_p3_guests::print(format!("{}\n", now.seconds)).await;
            }
            _ => return tern_p3_guests::fail("usage: p3_clocks sleep MS | p3_clocks now", 2).await,
        }
        Ok(())
    }
}

wasip3::cli::command::export!(Clocks);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_clocks runs through wasi:cli/run@0.3.0");
}
