//! # errmap
//!
//! One error catalog, written once as a `.proto` file
//! (`proto/errmap/v1/error_code.proto`), turned into rich gRPC errors that
//! every language can read.
//!
//! This is the light crate a Rust service depends on: catalog data, building
//! statuses, reading them back, the wire encoding, locales and the protobuf
//! types. It takes tonic without its transport, as tonic-types does. The
//! server side (the response layer, admission, auth, TLS, gRPC-Web, HTTP,
//! metrics, the lookup service) is `errmap-server`; the client retry layer
//! is `errmap-client`; the command line is `errmap-cli`.
//!
//! A catalog error travels as a plain `tonic::Status` whose gRPC code comes
//! from the catalog, and whose `grpc-status-details-bin` holds the standard
//! `google.rpc` details: an `ErrorInfo` (reason = the code's name, the
//! catalog's domain, `metadata["code"]` = the number), a `LocalizedMessage`,
//! a `RetryInfo` for the codes that ask for a retry, and the caller's
//! `BadRequest` and `Help`. Clients in Python, Go, Node or Java read them with
//! their stock gRPC libraries.
//!
//! ## Quick start
//!
//! ```
//! use errmap::{Catalog, ErrorCode};
//!
//! let entry = ErrorCode::from_code(21).unwrap().entry();
//! assert_eq!(entry.name(), "AUTH_REQUIRED");
//! assert_eq!(entry.http_status(), 401);
//! ```
//!
//! ## Server side: return catalog errors
//!
//! ```
//! use errmap::{Catalog, ErrorCode};
//! use tonic::Status;
//!
//! fn check_password(password: &str) -> Result<(), Status> {
//!     if !(6..64).contains(&password.len()) {
//!         return Err(ErrorCode::AuthPasswordInvalid
//!             .builder()
//!             .field_violation("password", "must be 6 to 63 characters long")
//!             .build()?);
//!     }
//!     Ok(())
//! }
//!
//! fn find_client(id: &str) -> Result<(), Status> {
//!     Err(ErrorCode::OauthClientNotFound.into())
//! }
//! # assert!(check_password("abc").is_err());
//! # assert!(find_client("x").is_err());
//! ```
//!
//! A [`BuildError`] converts into a `Status` (code 42, internal), so `?`
//! works in handlers.
//!
//! ## Client side: branch on the code
//!
//! ```
//! use errmap::{Catalog, ErrorCode, ErrorStatusExt};
//! # let status = tonic::Status::from(ErrorCode::AuthExpiredToken);
//!
//! // `status` is the error of a call.
//! match status.error_code() {
//!     Some(ErrorCode::AuthExpiredToken) => { /* refresh the token and retry */ }
//!     Some(ErrorCode::AuthInvalidToken | ErrorCode::AuthRequired) => { /* sign in */ }
//!     Some(code) => eprintln!("{code} ({}): {}", code.entry().number(), status.message()),
//!     None => eprintln!("not a catalog error: {status}"),
//! }
//! ```

pub mod catalog;
pub mod catalog_set;
pub mod code;
pub mod details;
pub mod headers;
pub mod locale;
pub mod markdown;
mod name_hash;
pub mod pb;
mod prebuilt;
pub mod status;
mod template;
pub mod wire;

pub use catalog::{grpc_code_name, CatalogEntry, CatalogTable, TableRef};
pub use catalog_set::Catalogs;
pub use code::{Catalog, ErrorCode, DOMAIN};
pub use details::{DetailsError, ErrorDetails, ErrorStatusExt};
/// The catalog rules, templates and the compatibility check (the
/// `errmap-spec` crate).
pub use errmap_spec as spec;
pub use locale::AcceptLanguage;
pub use status::{BuildError, StatusBuilder};

impl From<BuildError> for tonic::Status {
    /// A status that could not be built is a bug on the server side: it
    /// becomes 42 API_INTERNAL_SERVER_ERROR, without the builder's complaint.
    fn from(_: BuildError) -> Self {
        ErrorCode::ApiInternalServerError.to_status()
    }
}
