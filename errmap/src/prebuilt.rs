//! The pre-encoded statuses a [`CatalogTable`](crate::CatalogTable) keeps:
//! plain data, filled by [`crate::status`] on first use.

use bytes::Bytes;

/// The parts of a code's status that never change, encoded once per code
/// and locale and kept for the life of the process (catalogs are never
/// unloaded).
pub(crate) struct Prebuilt {
    /// The whole `google.rpc.Status` with the catalog message.
    pub(crate) status: Bytes,
    /// The `details` entry holding the `ErrorInfo` (reason, domain, code).
    pub(crate) error_info: &'static [u8],
    /// The `ErrorInfo` inside it.
    pub(crate) error_info_value: &'static [u8],
    /// The `details` entries that follow it: `LocalizedMessage`, and
    /// `RetryInfo` where the code has a delay.
    pub(crate) rest: &'static [u8],
    /// The response metadata holding `grpc-retry-pushback-ms`, for the
    /// codes with a delay.
    pub(crate) pushback: Option<tonic::metadata::MetadataMap>,
}
