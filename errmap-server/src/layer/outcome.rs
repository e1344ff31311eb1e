//! What the response layer found or made of a call's status, for the
//! metrics layer: handed over in the poll that found it ([`Listening`]),
//! and for anyone else in an [`OutcomeSlot`].

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

thread_local! {
    /// How many [`Listening`]s are alive on this thread, nested.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The outcome the response layer handed over while one was.
    static HANDED: std::cell::Cell<Option<Outcome>> = const { std::cell::Cell::new(None) };
}

/// Listens, for the length of one poll, for the outcome the response layer
/// finds in that poll.
///
/// The metrics layer starts one around each poll of the service or body
/// inside it. The response layer finds a call's status in a poll of its
/// own future or body, and those are polled inside the metrics layer's, on
/// the same thread: so the outcome reaches the metrics layer with no slot
/// allocated and shared per call. A layer between the two that polled the
/// response layer elsewhere (in a task of its own) would hand nothing over:
/// the metrics layer then records the gRPC code alone, as for a status the
/// response layer never saw. Nested listeners all hear the outcome.
#[must_use = "listening ends when this is dropped"]
pub(crate) struct Listening {
    /// The depth outside this one.
    outer: u32,
    done: bool,
}

impl Listening {
    /// Starts listening on this thread.
    pub(crate) fn start() -> Self {
        let outer = DEPTH.get();
        DEPTH.set(outer.saturating_add(1));
        Self { outer, done: false }
    }

    /// Stops listening: the outcome found meanwhile, if any. An outer
    /// listener hears it too.
    pub(crate) fn finish(mut self) -> Option<Outcome> {
        self.done = true;
        DEPTH.set(self.outer);
        let outcome = HANDED.take();
        if self.outer > 0 {
            if let Some(outcome) = &outcome {
                HANDED.set(Some(outcome.clone()));
            }
        }
        outcome
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        // Unwound by a panic in the poll: the depth is put back all the
        // same, and nothing found is left for a later listener.
        if !self.done {
            DEPTH.set(self.outer);
            if self.outer == 0 {
                drop(HANDED.take());
            }
        }
    }
}

/// Hands `outcome` to the [`Listening`]s on this thread, if any.
pub(super) fn offer(outcome: &Outcome) {
    if DEPTH.get() > 0 {
        HANDED.set(Some(outcome.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: &'static str) -> Outcome {
        Outcome {
            code: Code::NotFound,
            domain: Cow::Borrowed("auth.errmap.dev"),
            reason: Cow::Borrowed(r),
        }
    }

    #[test]
    fn an_outcome_reaches_the_listener_of_its_poll_and_no_later_one() {
        // No one listens: nothing is kept for later.
        offer(&reason("EARLY"));
        let listening = Listening::start();
        assert_eq!(listening.finish(), None);

        let listening = Listening::start();
        offer(&reason("API_ITEM_NOT_FOUND"));
        assert_eq!(listening.finish(), Some(reason("API_ITEM_NOT_FOUND")));
        // Taken: the next poll hears nothing of it.
        let listening = Listening::start();
        assert_eq!(listening.finish(), None);
    }

    #[test]
    fn nested_listeners_both_hear_it() {
        let outer = Listening::start();
        let inner = Listening::start();
        offer(&reason("AUTH_REQUIRED"));
        assert_eq!(inner.finish(), Some(reason("AUTH_REQUIRED")));
        assert_eq!(outer.finish(), Some(reason("AUTH_REQUIRED")));
        let after = Listening::start();
        assert_eq!(after.finish(), None);
    }

    #[test]
    fn a_panicking_poll_leaves_nothing_behind() {
        let unwound = std::panic::catch_unwind(|| {
            let _listening = Listening::start();
            offer(&reason("API_INTERNAL_SERVER_ERROR"));
            panic!("a handler's panic");
        });
        assert!(unwound.is_err());
        offer(&reason("UNHEARD"));
        let listening = Listening::start();
        assert_eq!(listening.finish(), None, "a listener was left behind");
    }
}
