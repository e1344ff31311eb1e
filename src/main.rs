//! The `errmap` command-line tool: run the server, look codes up, decode
//! error details. See `errmap --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
