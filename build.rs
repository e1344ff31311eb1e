//! The example accounts API (`examples/accounts`) has a proto of its own;
//! its bindings go to `OUT_DIR/accounts.v1.rs`, for the example alone.

use std::process::ExitCode;

fn main() -> ExitCode {
    match compile_example_protos() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The example accounts API (`examples/accounts`) has a proto of its own;
/// its bindings go to `OUT_DIR/accounts.v1.rs`, outside the library.
fn compile_example_protos() -> Result<(), String> {
    const ROOT: &str = "examples/proto";
    const FILE: &str = "accounts/v1/accounts.proto";
    if !std::path::Path::new(ROOT).join(FILE).exists() {
        return Ok(());
    }
    println!("cargo:rerun-if-changed={ROOT}");
    let mut compiler = protox::Compiler::new([ROOT]).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files([FILE])
        .map_err(|e| format!("{ROOT}/: {e}"))?;
    tonic_prost_build::configure()
        .compile_fds(compiler.file_descriptor_set())
        .map_err(|e| format!("generating the example's bindings: {e}"))
}
