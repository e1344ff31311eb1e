//! What the response layer found or made of a call's status, for the
//! metrics layer: the [`Outcome`] in an [`OutcomeSlot`].

use super::*;

/// What the response layer found or made of a call's status: its gRPC code
/// and, for a catalog status, the catalog's domain and the reason (empty
/// otherwise). Read by the [`metrics`](crate::metrics) layer, so that no
/// one decodes the details a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The gRPC code sent.
    pub code: Code,
    /// The `ErrorInfo.domain`, or `""`.
    pub domain: Cow<'static, str>,
    /// The `ErrorInfo.reason`, or `""`.
    pub reason: Cow<'static, str>,
}

impl Outcome {
    /// A status without a catalog code (an OK one, say).
    pub fn plain(code: Code) -> Self {
        Self {
            code,
            domain: Cow::Borrowed(""),
            reason: Cow::Borrowed(""),
        }
    }
}

/// A slot for a call's [`Outcome`]: put one into a request's extensions
/// before the response layer, and read it once the status is known.
#[derive(Debug, Clone, Default)]
pub struct OutcomeSlot(Arc<OnceLock<Outcome>>);

impl OutcomeSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The outcome, once the response layer has seen the status.
    pub fn get(&self) -> Option<Outcome> {
        self.0.get().cloned()
    }

    pub(super) fn set(&self, outcome: Outcome) {
        let _ = self.0.set(outcome);
    }
}
