//! Giving memory back after a flood.
//!
//! glibc's allocator keeps what a flood of connections and requests freed:
//! the idle RSS of a server that held 3,000 connections stayed at the
//! flood's peak. [`trim_when_quiet`] watches the process, and once the
//! server is quiet again (few connections, few calls) while its RSS stands
//! well above the lowest it has been, asks the allocator to return its free
//! pages (`malloc_trim`). On other allocators and systems it does nothing.

use std::time::Duration;

use crate::{admission::Admission, listener::Places};

/// How often the watcher looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// RSS above the lowest seen past which a quiet server trims. It was
/// 4 MiB; what glibc gives back by itself after a flood left the idle RSS
/// 3–4 MiB up, where nothing trimmed it, so it is below the 3 MiB that the
/// attack tests hold an idle server to.
pub const TRIM_ABOVE_LOWEST: u64 = 2 * 1024 * 1024;

/// Connections open at most for the server to count as quiet.
pub const QUIET_CONNECTIONS: usize = 64;

/// Calls in flight at most for the server to count as quiet.
pub const QUIET_CALLS: usize = 16;

/// Resident memory of this process, in bytes (from `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Asks the allocator to give its free memory back to the system; true if
/// it did (glibc's `malloc_trim`).
pub fn give_back() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes a byte count and only walks glibc's own
        // arenas; it is safe to call at any time from any thread.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Runs for ever: every [`CHECK_EVERY`], when the server is quiet (at
/// most [`QUIET_CONNECTIONS`] connections and [`QUIET_CALLS`] calls) and
/// its RSS is over [`TRIM_ABOVE_LOWEST`] above the lowest seen, gives
/// memory back. The server spawns it.
pub async fn trim_when_quiet(admission: Admission, places: Places) {
    let mut lowest = resident_bytes().unwrap_or(0);
    // What the last trim left: what is still there after it is not given
    // back by trimming again.
    let mut after_last_trim: Option<u64> = None;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(now) = resident_bytes() else {
            return;
        };
        lowest = lowest.min(now);
        let quiet =
            places.open_connections() <= QUIET_CONNECTIONS && admission.in_flight() <= QUIET_CALLS;
        let grown = now > lowest + TRIM_ABOVE_LOWEST
            && after_last_trim.is_none_or(|t| now > t + TRIM_ABOVE_LOWEST);
        if quiet && grown {
            let trimmed = give_back();
            let after = resident_bytes().unwrap_or(now);
            tracing::debug!(
                before_kib = now / 1024,
                after_kib = after / 1024,
                trimmed,
                "quiet after a flood: memory given back"
            );
            lowest = lowest.min(after);
            after_last_trim = Some(after);
        }
    }
}
