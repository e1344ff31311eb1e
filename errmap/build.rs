//! Compiles `proto/` (the repository's `proto/`, shipped in this package)
//! with protox (no `protoc` needed), generates the Rust bindings with
//! tonic-prost-build, and the catalog enum with errmap-build (which checks
//! every value's options, as it does for any team's catalog), and writes
//! the descriptor set (custom options kept) to `OUT_DIR`.

use std::{env, fmt::Write as _, fs, path::PathBuf, process::ExitCode};

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "errmap/v1/options.proto",
    "errmap/v1/error_code.proto",
    "errmap/v1/catalog.proto",
];
const CATALOG_ENUM: &str = "errmap.v1.ErrorCode";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: errmap catalog build failed:\n{message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT]).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(PROTO_FILES)
        .map_err(|e| format!("{PROTO_ROOT}/: {e}"))?;

    let generated = errmap_build::configure()
        .runtime_path("crate")
        .file_name("catalog_table")
        .emit_rerun_if_changed(false)
        .compile(&["errmap/v1/error_code.proto"], &[PROTO_ROOT])
        .map_err(|e| e.to_string())?;
    let catalog = generated
        .catalogs
        .iter()
        .find(|c| c.enum_name == CATALOG_ENUM)
        .ok_or_else(|| format!("{CATALOG_ENUM} is not a catalog"))?;

    // The full set, imports and custom options included, for server reflection.
    fs::write(
        out_dir.join("errmap_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .map_err(|e| format!("writing the descriptor set: {e}"))?;

    // The default catalog's domain, as a constant for the crate root.
    let mut table = fs::read_to_string(&generated.rust_file)
        .map_err(|e| format!("reading the catalog table: {e}"))?;
    let _ = writeln!(
        table,
        "/// The ErrorInfo domain of the auth API's catalog, [`ErrorCode`].\npub const DOMAIN: &str = {:?};",
        catalog.domain
    );
    fs::write(&generated.rust_file, table)
        .map_err(|e| format!("writing the catalog table: {e}"))?;

    // google.protobuf types map to prost-types; prost-build still needs their
    // descriptors to analyse our messages.
    let fds = compiler.file_descriptor_set();
    // No transport: the light crate takes tonic without it, so the
    // client has no `connect`; give `new` a channel.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)
        .map_err(|e| format!("generating Rust bindings: {e}"))?;

    Ok(())
}
