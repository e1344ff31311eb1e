//! Classification: what a status that slipped through becomes, by a
//! [`ClassifyStatus`] policy (the default follows the table in the
//! [layer docs](super)).

use super::*;

/// What a status that slipped through becomes: a code of any catalog (the
/// auth API's [`ErrorCode`], or a team's own enum), sent with its own gRPC
/// code or another.
#[derive(Debug, Clone)]
pub struct Classified {
    table: TableRef,
    index: usize,
    /// The gRPC code to send it with; `None` sends the original one.
    pub grpc_code: Option<Code>,
}

impl Classified {
    /// Send `code`, keeping the gRPC code of the status that slipped
    /// through.
    pub fn new<C: Catalog>(code: C) -> Self {
        Self {
            table: C::table().into(),
            index: code.index(),
            grpc_code: None,
        }
    }

    /// Send `code` with the gRPC code `grpc_code`.
    pub fn with_grpc_code<C: Catalog>(code: C, grpc_code: Code) -> Self {
        Self {
            grpc_code: Some(grpc_code),
            ..Self::new(code)
        }
    }

    /// The catalog entry to send.
    pub fn entry(&self) -> &CatalogEntry {
        &self.table.entries()[self.index]
    }

    /// The catalog it belongs to.
    pub fn table(&self) -> &TableRef {
        &self.table
    }
}

impl PartialEq for Classified {
    fn eq(&self, other: &Self) -> bool {
        self.table.same(&other.table)
            && self.index == other.index
            && self.grpc_code == other.grpc_code
    }
}

impl Eq for Classified {}

/// Decides what a non-OK status that is not a catalog status becomes;
/// `None` sends it unchanged.
pub trait ClassifyStatus: Clone + Send + Sync + 'static {
    /// Classifies a status by its gRPC code.
    fn classify(&self, code: Code) -> Option<Classified>;
}

impl<F> ClassifyStatus for F
where
    F: Fn(Code) -> Option<Classified> + Clone + Send + Sync + 'static,
{
    fn classify(&self, code: Code) -> Option<Classified> {
        self(code)
    }
}

/// The policy of the table in the [layer docs](crate::layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl ClassifyStatus for DefaultPolicy {
    fn classify(&self, code: Code) -> Option<Classified> {
        default_classify(code)
    }
}

/// The default classification (the table in the [layer docs](crate::layer)).
pub fn default_classify(code: Code) -> Option<Classified> {
    Some(Classified::new(match code {
        Code::Ok | Code::Cancelled | Code::DeadlineExceeded => return None,
        Code::Internal | Code::Unknown | Code::DataLoss => ErrorCode::ApiInternalServerError,
        Code::InvalidArgument => ErrorCode::ApiInvalidRequest,
        Code::NotFound => ErrorCode::ApiItemNotFound,
        Code::PermissionDenied => ErrorCode::ApiForbidden,
        Code::Unauthenticated => ErrorCode::AuthRequired,
        Code::ResourceExhausted => ErrorCode::ApiTooManyRequests,
        Code::Unavailable => ErrorCode::ApiTryAgainLater,
        Code::Unimplemented => ErrorCode::ApiNotImplemented,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted | Code::OutOfRange => {
            ErrorCode::ApiUnknownError
        }
    }))
}
