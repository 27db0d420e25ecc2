//! Greets everyone named on the command line, in every language found in
//! the read-only `/greetings` directory tern grants it.
use std::fs;

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let mut greetings: Vec<(String, String)> = match fs::read_dir("/greetings") {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, fs::read_to_string(e.path()).ok()?)))
            .collect(),
        Err(e) => {
            eprintln!("no /greetings directory ({e}); run with --dir-ro examples/hello/greetings::/greetings");
            std::process::exit(1);
        }
    };
    greetings.sort();
    for (language, greeting) in greetings {
        for name in &names {
            println!("[{language}] {}, {name}!", greeting.trim());
        }
    }
    // The sandbox holds: the host's files are out of reach.
    match fs::read_to_string("/etc/passwd") {
        Ok(_) => println!("could read /etc/passwd: the sandbox is open!"),
        Err(_) => println!("(/etc/passwd is out of reach, as it should be)"),
    }
}
