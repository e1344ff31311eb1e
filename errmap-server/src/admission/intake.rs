//! The intake budget: what calls whose request has not arrived hold, and
//! the oldest charge refused first past it.

use super::*;

/// The intake memory budget: what the calls still arriving hold, oldest
/// first. Only a call whose request did not arrive in its first poll is
/// charged, so the common unary call never takes the lock.
#[derive(Debug, Default)]
pub(super) struct IntakeBudget {
    pub(super) limit: usize,
    pub(super) used: AtomicUsize,
    pub(super) refused: std::sync::atomic::AtomicU64,
    pub(super) next: std::sync::atomic::AtomicU64,
    pub(super) waiting: Mutex<BTreeMap<u64, Weak<Ticket>>>,
}

/// One call's share of the intake budget.
#[derive(Debug, Default)]
pub(super) struct Ticket {
    pub(super) charged: AtomicUsize,
    pub(super) refused: AtomicBool,
    pub(super) waker: Mutex<Option<Waker>>,
}

/// A call's place in the intake budget, given back when its intake ends.
#[derive(Debug)]
pub(super) struct IntakeCharge {
    pub(super) shared: Arc<Shared>,
    pub(super) seq: u64,
    pub(super) ticket: Arc<Ticket>,
}

impl IntakeBudget {
    /// Charges `bytes` to a new ticket, then refuses the oldest intakes
    /// (this one last) until the budget holds.
    pub(super) fn charge(shared: &Arc<Shared>, bytes: usize) -> IntakeCharge {
        let budget = &shared.intake;
        let ticket = Arc::new(Ticket {
            charged: AtomicUsize::new(bytes),
            ..Ticket::default()
        });
        let seq = budget.next.fetch_add(1, Ordering::Relaxed);
        budget.used.fetch_add(bytes, Ordering::AcqRel);
        if let Ok(mut waiting) = budget.waiting.lock() {
            waiting.insert(seq, Arc::downgrade(&ticket));
        }
        budget.enforce();
        IntakeCharge {
            shared: shared.clone(),
            seq,
            ticket,
        }
    }

    pub(super) fn enforce(&self) {
        while self.used.load(Ordering::Acquire) > self.limit {
            let oldest = match self.waiting.lock() {
                Ok(mut waiting) => waiting.pop_first(),
                Err(_) => return,
            };
            let Some((_, ticket)) = oldest else { return };
            let Some(ticket) = ticket.upgrade() else {
                continue;
            };
            if ticket.refused.swap(true, Ordering::AcqRel) {
                continue;
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            // Given back now: the call is answered at its next poll.
            let charged = ticket.charged.swap(0, Ordering::AcqRel);
            self.used.fetch_sub(charged, Ordering::AcqRel);
            let waker = ticket.waker.lock().ok().and_then(|mut w| w.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl IntakeCharge {
    /// Charges the call `total` bytes now, and waits to be woken if it is
    /// refused. Returns whether it was refused.
    pub(super) fn update(&self, total: usize, waker: &Waker) -> bool {
        let budget = &self.shared.intake;
        if self.ticket.refused.load(Ordering::Acquire) {
            return true;
        }
        if let Ok(mut slot) = self.ticket.waker.lock() {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        let before = self.ticket.charged.swap(total, Ordering::AcqRel);
        if total > before {
            budget.used.fetch_add(total - before, Ordering::AcqRel);
            budget.enforce();
        } else {
            budget.used.fetch_sub(before - total, Ordering::AcqRel);
        }
        self.ticket.refused.load(Ordering::Acquire)
    }

    pub(super) fn is_refused(&self) -> bool {
        self.ticket.refused.load(Ordering::Acquire)
    }
}

impl Drop for IntakeCharge {
    fn drop(&mut self) {
        let budget = &self.shared.intake;
        let charged = self.ticket.charged.swap(0, Ordering::AcqRel);
        budget.used.fetch_sub(charged, Ordering::AcqRel);
        if let Ok(mut waiting) = budget.waiting.lock() {
            waiting.remove(&self.seq);
        }
    }
}

/// What a waiting call costs the intake budget for its head: what it
/// holds in memory, as measured, not only its bytes. With HTTP/2, a call
/// waiting with a 15 KB head held about 57 KB of resident memory, and one
/// with a small head about 2.5 KB (the stream, the task, the layers'
/// futures): so each header counts four times its HTTP/2 size (name, value
/// and 32), plus 2 KiB for the call.
pub(super) fn head_bytes(parts: &http::request::Parts) -> usize {
    pub(super) const PER_CALL: usize = 2 * 1024;
    pub(super) const PER_HEADER_BYTE: usize = 4;
    let head = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    PER_CALL + PER_HEADER_BYTE * head
}
