//! The shop team's build script: errmap-build checks the catalog and
//! generates `ShopError`; tonic-prost-build generates the service from the
//! descriptor set errmap-build wrote (no `protoc` needed).
//!
//! It also compiles what errmap's README shows a team ("Your own
//! catalog"): the proto and the handler, taken from the README as they are
//! written there, so that a snippet that does not compile fails this build
//! (`tests/readme.rs` runs the handler).

use std::path::{Path, PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let generated = errmap_build::configure().compile(&["shop/v1/shop.proto"], &["proto"])?;
    let set = prost_types::FileDescriptorSet::decode(
        std::fs::read(&generated.descriptor_set_file)?.as_slice(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(set)?;
    readme_snippets()
}

/// The README's own-catalog proto, compiled by errmap-build into
/// `$OUT_DIR/readme/`, and its handler written to
/// `$OUT_DIR/readme/handler.rs`, including the enum built from that proto.
fn readme_snippets() -> Result<(), Box<dyn std::error::Error>> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("readme");
    let proto_dir = out.join("proto");
    std::fs::create_dir_all(proto_dir.join("shop/v1"))?;
    std::fs::write(
        proto_dir.join("shop/v1/shop.proto"),
        snippet(&text, "shop-proto")?,
    )?;
    errmap_build::configure()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(&["shop/v1/shop.proto"], &[&proto_dir])
        .map_err(|e| format!("README.md, the shop-proto snippet: {e}"))?;
    // The handler includes the crate's generated file: here, the one
    // generated from the README's proto, not the example's own.
    let handler = snippet(&text, "shop-handler")?;
    const INCLUDE: &str = r#"include!(concat!(env!("OUT_DIR"), "/errmap_catalogs.rs"));"#;
    if !handler.contains(INCLUDE) {
        return Err(format!("README.md, the shop-handler snippet: no `{INCLUDE}`").into());
    }
    let mut handler = handler.replace(
        INCLUDE,
        r#"include!(concat!(env!("OUT_DIR"), "/readme/errmap_catalogs.rs"));"#,
    );
    // "Templates": its handler, in the same module.
    handler.push_str(&snippet(&text, "shop-template")?);
    std::fs::write(out.join("handler.rs"), handler)?;
    Ok(())
}

/// The fenced block that follows `<!-- readme-snippet: NAME ... -->`.
fn snippet(readme: &str, name: &str) -> Result<String, String> {
    let marker = format!("<!-- readme-snippet: {name} ");
    let missing = || format!("README.md has no snippet marked {name:?}");
    let start = readme.find(&marker).ok_or_else(missing)?;
    let mut lines = readme[start..].lines().skip(1);
    lines
        .next()
        .filter(|l| l.starts_with("```"))
        .ok_or_else(missing)?;
    let mut body = String::new();
    for line in lines {
        if line.starts_with("```") {
            return Ok(body);
        }
        body.push_str(line);
        body.push('\n');
    }
    Err(format!("README.md: the snippet {name:?} is not closed"))
}
