//! The descriptors the server reads JSON and serves reflection with.

use prost::Message as _;

/// The `google.rpc` detail types' descriptors (from `tonic-types`), under
/// the file names that `google/rpc/*.proto` have everywhere else, so that
/// reflection clients can resolve imports by those names.
pub(crate) fn google_rpc_descriptor_set() -> prost_types::FileDescriptorSet {
    let canonical = |name: &str| match name {
        "error_details.proto" => "google/rpc/error_details.proto".to_owned(),
        "status.proto" => "google/rpc/status.proto".to_owned(),
        other => other.to_owned(),
    };
    let mut set = prost_types::FileDescriptorSet::decode(errmap::pb::rpc::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    for file in &mut set.file {
        file.name = file.name.as_deref().map(canonical);
        for dependency in &mut file.dependency {
            *dependency = canonical(dependency);
        }
    }
    set
}
