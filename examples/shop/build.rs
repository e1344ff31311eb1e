//! The shop team's build script: errmap-build checks the catalog and
//! generates `ShopError`; tonic-prost-build generates the service from the
//! descriptor set errmap-build wrote (no `protoc` needed).

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
    Ok(())
}
