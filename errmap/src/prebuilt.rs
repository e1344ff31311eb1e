//! The pre-encoded statuses a [`CatalogTable`](crate::CatalogTable) keeps:
//! plain data, filled by [`crate::status`] on first use.

use bytes::Bytes;

/// The parts of a code's status that never change, encoded once per code
/// and locale and kept as long as the catalog's table (for a compiled
/// catalog, the life of the process).
pub(crate) struct Prebuilt {
    /// The whole `google.rpc.Status` with the catalog message.
    pub(crate) status: Bytes,
    /// The `details` entry holding the `ErrorInfo` (reason, domain, code).
    pub(crate) error_info: Bytes,
    /// The `ErrorInfo` inside it.
    pub(crate) error_info_value: Bytes,
    /// The `details` entries that follow it: `LocalizedMessage`, and
    /// `RetryInfo` where the code has a delay.
    pub(crate) rest: Bytes,
    /// How many bytes of `rest` the `LocalizedMessage` takes; the
    /// `RetryInfo` follows.
    pub(crate) localized_len: usize,
    /// For a message template, the message a status without arguments
    /// sends: every placeholder written as `<name>`. `None` for a plain
    /// message, which is sent as it is.
    pub(crate) unfilled: Option<Box<str>>,
    /// For a message template, its text in this locale read into segments
    /// (see [`crate::template`]); `None` for a plain message.
    pub(crate) segments: Option<Box<[crate::template::Segment]>>,
    /// The response metadata holding `grpc-retry-pushback-ms`, for the
    /// codes with a delay.
    pub(crate) pushback: Option<tonic::metadata::MetadataMap>,
}
