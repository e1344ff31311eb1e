//! Protobuf types: errmap's own (`errmap.v1`) and the `google.rpc` details.
//!
//! The generated code stays private; this module re-exports what users need.
//! The catalog enum is [`crate::ErrorCode`], with the [`crate::Catalog`]
//! trait; prost's enum of the same proto is kept private.

mod generated {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/errmap.v1.rs"));
}

// prost's own `ErrorCode` enum is not re-exported: the catalog type is
// `errmap::ErrorCode`. Message fields that hold a code are `i32`s.
pub use generated::{
    error_catalog_client, error_catalog_server, get_error_request, CatalogInfo, ErrorDescriptor,
    ErrorSpec, GetErrorRequest, GetErrorResponse, ListCatalogsRequest, ListCatalogsResponse,
    ListErrorsRequest, ListErrorsResponse,
};

/// The encoded `FileDescriptorSet` of `proto/errmap/v1/*.proto` and their
/// imports, with the custom options (`errmap.v1.domain`, `errmap.v1.error`)
/// kept, for server reflection and for tools that read the catalog from
/// descriptors.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/errmap_descriptor.bin"));

/// The standard `google.rpc` error detail messages errmap sends and reads,
/// as carried by `tonic-types`.
pub mod rpc {
    pub use tonic_types::pb::{
        bad_request, help, BadRequest, ErrorInfo, Help, LocalizedMessage, RetryInfo, Status,
        FILE_DESCRIPTOR_SET,
    };
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn file_descriptor_set_is_valid() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<_> = set.file.iter().map(|f| f.name()).collect();
        for wanted in [
            "errmap/v1/options.proto",
            "errmap/v1/error_code.proto",
            "errmap/v1/catalog.proto",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
    }
}
