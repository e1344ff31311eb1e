//! Compiles `proto/` with protox (no `protoc` needed), generates the Rust
//! bindings with tonic-prost-build, validates the catalog's custom options
//! through prost-reflect, and writes the static catalog table and the
//! descriptor set (custom options kept) to `OUT_DIR`.

use std::{env, fmt::Write as _, fs, path::PathBuf, process::ExitCode};

#[path = "build/catalog_spec.rs"]
#[allow(dead_code, unreachable_pub)]
mod catalog_spec;
#[path = "src/name_hash.rs"]
mod name_hash;

use catalog_spec::{read_catalog, CatalogSpec};

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
    println!("cargo:rerun-if-changed=build/catalog_spec.rs");
    println!("cargo:rerun-if-changed=src/name_hash.rs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT]).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(PROTO_FILES)
        .map_err(|e| format!("{PROTO_ROOT}/: {e}"))?;

    let pool = compiler.descriptor_pool();
    let catalog = read_catalog(&pool, CATALOG_ENUM).map_err(|e| e.to_string())?;

    // The full set, imports and custom options included, for server reflection.
    fs::write(
        out_dir.join("errmap_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .map_err(|e| format!("writing the descriptor set: {e}"))?;

    fs::write(out_dir.join("catalog_table.rs"), render_table(&catalog))
        .map_err(|e| format!("writing the catalog table: {e}"))?;

    // google.protobuf types map to prost-types; prost-build still needs their
    // descriptors to analyse our messages.
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .enum_attribute(CATALOG_ENUM, "#[non_exhaustive]")
        .compile_fds(fds)
        .map_err(|e| format!("generating Rust bindings: {e}"))?;

    compile_example_protos()
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

/// `AUTH_USERNAME_TAKEN` to `AuthUsernameTaken`, as prost names enum variants
/// and as tonic names `Code` variants.
fn upper_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

/// Picks the smallest power-of-two table and a seed under which every name
/// gets its own slot, so a by-name lookup is one hash and one comparison.
fn perfect_hash(names: &[&str]) -> (u64, usize, Vec<u8>) {
    let mut size = (names.len() * 2).next_power_of_two().max(8);
    loop {
        for seed in 0..200_000u64 {
            let mut slots = vec![u8::MAX; size];
            let mut ok = true;
            for (i, name) in names.iter().enumerate() {
                let slot = (name_hash::name_hash(seed, name.as_bytes()) as usize) & (size - 1);
                if slots[slot] != u8::MAX {
                    ok = false;
                    break;
                }
                slots[slot] = i as u8;
            }
            if ok {
                return (seed, size, slots);
            }
        }
        size *= 2;
    }
}

fn render_table(catalog: &CatalogSpec) -> String {
    let n = catalog.entries.len();
    assert!(
        n < usize::from(u8::MAX),
        "the catalog table indexes entries with u8"
    );
    let max_code = catalog.entries.iter().map(|e| e.number).max().unwrap_or(0);
    let max_name = catalog
        .entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by build.rs from {PROTO_ROOT}/. Do not edit."
    );
    let _ = writeln!(
        s,
        "/// The ErrorInfo domain of every catalog error.\npub const DOMAIN: &str = {:?};",
        catalog.domain
    );
    let _ = writeln!(s, "pub(crate) const MAX_CODE: i32 = {max_code};");
    let _ = writeln!(s, "pub(crate) const MAX_NAME_LEN: usize = {max_name};");
    let _ = writeln!(s, "pub(crate) static ENTRIES: [CatalogEntry; {n}] = [");
    for e in &catalog.entries {
        let retry = match e.retry_delay {
            Some((secs, nanos)) => format!("Some(::std::time::Duration::new({secs}, {nanos}))"),
            None => "None".to_owned(),
        };
        let _ = writeln!(
            s,
            "    CatalogEntry {{ code: ErrorCode::{variant}, number: {num}, number_str: \"{num}\", name: {name:?}, grpc_code: ::tonic::Code::{grpc}, http_status: {http}, category: {cat:?}, message: {msg:?}, retry_delay: {retry} }},",
            variant = upper_camel(&e.name),
            num = e.number,
            name = e.name,
            grpc = upper_camel(e.grpc_code),
            http = e.http_status,
            cat = e.category,
            msg = e.message,
        );
    }
    let _ = writeln!(s, "];");

    let mut by_code = vec![u8::MAX; max_code as usize + 1];
    for (i, e) in catalog.entries.iter().enumerate() {
        by_code[e.number as usize] = i as u8;
    }
    let _ = writeln!(
        s,
        "pub(crate) static BY_CODE: [u8; {}] = {by_code:?};",
        by_code.len()
    );

    let names: Vec<&str> = catalog.entries.iter().map(|e| e.name.as_str()).collect();
    let (seed, size, slots) = perfect_hash(&names);
    let _ = writeln!(s, "pub(crate) const NAME_SEED: u64 = {seed};");
    let _ = writeln!(s, "pub(crate) static BY_NAME: [u8; {size}] = {slots:?};");
    s
}
