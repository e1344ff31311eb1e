//! Making client-controlled text safe to log or print, and logging at a
//! bounded rate.
//!
//! Anything that came from a peer (a path, a token's header fields, a
//! metadata value, a status message) can hold newlines and terminal escape
//! sequences that forge log lines or repaint a terminal. [`escape`] turns
//! every control character into a visible escape, and cuts long text, so a
//! value always stays on its line.
//!
//! ```
//! use errmap_server::sanitize::escape;
//!
//! assert_eq!(escape("HS256\n\x1b[31mFAKE"), "HS256\\n\\u{1b}[31mFAKE");
//! assert_eq!(escape("plain"), "plain");
//! ```

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// The most characters [`escape`] keeps of one value.
pub const MAX_ESCAPED_CHARS: usize = 256;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character (C0, DEL, C1, and the Unicode line
/// separators and bidirectional overrides) written as a Rust-style escape,
/// and cut after [`MAX_ESCAPED_CHARS`] characters with a trailing `…`.
/// Borrows when nothing needs changing.
pub fn escape(text: &str) -> Cow<'_, str> {
    let long = text.chars().nth(MAX_ESCAPED_CHARS).is_some();
    if !long && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(4 * MAX_ESCAPED_CHARS) + 8);
    push_escaped(&mut out, text.chars().take(MAX_ESCAPED_CHARS));
    if long {
        out.push('…');
    }
    Cow::Owned(out)
}

/// `text` with every control character escaped as [`escape`] does, but
/// whole: for output a person asked for, such as `errmap decode`.
///
/// ```
/// assert_eq!(errmap_server::sanitize::escape_controls("a\x1b[2Jb"), "a\\u{1b}[2Jb");
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    push_escaped(&mut out, text.chars());
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, chars: impl Iterator<Item = char>) {
    for c in chars {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
}

/// [`escape`] for bytes that may not be UTF-8: invalid sequences become
/// U+FFFD first.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => escape(text),
        Cow::Owned(text) => Cow::Owned(escape(&text).into_owned()),
    }
}

/// Lets at most `burst` events through per `window`, and counts the rest,
/// so that a flood of bad requests cannot flood the log.
///
/// ```
/// use errmap_server::sanitize::RateLimit;
/// use std::time::Duration;
///
/// let limit = RateLimit::new(2, Duration::from_secs(60));
/// assert_eq!(limit.check(), Some(0));
/// assert_eq!(limit.check(), Some(0));
/// assert_eq!(limit.check(), None); // counted, not logged
/// assert_eq!(limit.total(), 3);
/// ```
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    window: Duration,
    state: Mutex<Window>,
    total: AtomicU64,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    /// At most `burst` events per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            state: Mutex::new(Window {
                started: None,
                used: 0,
                suppressed: 0,
            }),
            total: AtomicU64::new(0),
        }
    }

    /// Counts one event. `Some(n)` when it may be logged, with `n` the
    /// events suppressed since the last one logged; `None` when it may not.
    pub fn check(&self) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let Ok(mut state) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        if state
            .started
            .is_none_or(|started| now.duration_since(started) >= self.window)
        {
            state.started = Some(now);
            state.used = 0;
        }
        if state.used < self.burst {
            state.used += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }

    /// Every event counted so far, logged or not.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// One log line per key and window: the first event of a key in a window
/// is logged (with the count of those suppressed since), the others are
/// counted. Keys are `&'static str`s from a bounded set (catalog reasons),
/// so the map stays small.
#[derive(Debug)]
pub struct RateLimitByKey {
    window: Duration,
    state: Mutex<Vec<(Cow<'static, str>, Instant, u64)>>,
}

impl RateLimitByKey {
    /// One event per key per `window`.
    pub const fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(Vec::new()),
        }
    }

    /// Counts one event of `key`: `Some(n)` when it may be logged, with `n`
    /// the events of that key suppressed since the last one logged.
    pub fn check(&self, key: impl Into<Cow<'static, str>>) -> Option<u64> {
        let key = key.into();
        let Ok(mut state) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        match state.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, last, suppressed)) if now.duration_since(*last) < self.window => {
                *suppressed += 1;
                None
            }
            Some((_, last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                if state.len() < 4096 {
                    state.push((key, now, 0));
                }
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_key_logs_once_a_window_per_key() {
        let limit = RateLimitByKey::new(Duration::from_secs(3600));
        assert_eq!(limit.check("A"), Some(0));
        assert_eq!(limit.check("A"), None);
        assert_eq!(limit.check("A"), None);
        assert_eq!(limit.check("B"), Some(0));
        let fast = RateLimitByKey::new(Duration::ZERO);
        assert_eq!(fast.check("A"), Some(0));
        assert_eq!(fast.check("A"), Some(0));
    }

    #[test]
    fn control_characters_never_survive() {
        let nasty = "a\nb\rc\x1b[2J\x07\u{85}\u{2028}\u{202e}d\x7f";
        let escaped = escape(nasty);
        assert!(!escaped.chars().any(needs_escape), "{escaped:?}");
        assert!(escaped.starts_with("a\\nb\\rc\\u{1b}[2J"));
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000);
        let escaped = escape(&long);
        assert_eq!(escaped.chars().count(), MAX_ESCAPED_CHARS + 1);
        assert!(escaped.ends_with('…'));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_then_escaped() {
        assert_eq!(escape_bytes(b"a\xff\n"), "a\u{fffd}\\n");
    }

    #[test]
    fn the_rate_limit_counts_what_it_suppresses() {
        let limit = RateLimit::new(1, Duration::from_millis(1));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(limit.check(), Some(2));
    }
}

/// The most bytes of a dependency's log record that reach the log.
pub const MAX_PEER_LOG_BYTES: usize = 200;

/// Dependency log records let through per second, in all.
static DEPENDENCY_LOG_LIMIT: RateLimit = RateLimit::new(5, Duration::from_secs(1));

/// The bridge from the `log` crate, which dependencies such as rustls log
/// through, to `tracing`: a record at WARN or above becomes an event with
/// target `errmap::dependency`, its text escaped and cut to
/// [`MAX_PEER_LOG_BYTES`], at most 5 a second (with the count suppressed).
#[derive(Debug)]
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(suppressed) = DEPENDENCY_LOG_LIMIT.check() else {
            return;
        };
        let text = record.args().to_string();
        let text = escape_controls(&text);
        let text = errmap::status::cut_at_char_boundary(&text, MAX_PEER_LOG_BYTES);
        let from = record.target();
        let from = errmap::status::cut_at_char_boundary(from, 64);
        match record.level() {
            log::Level::Error => {
                tracing::error!(target: "errmap::dependency", from, since_last_line = suppressed, "{text}")
            }
            _ => {
                tracing::warn!(target: "errmap::dependency", from, since_last_line = suppressed, "{text}")
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge that brings dependencies' `log` records (rustls')
/// into `tracing` at WARN and above, escaped, cut to
/// [`MAX_PEER_LOG_BYTES`] and at most 5 a second. `errmap serve` calls it
/// before it sets up its subscriber; a second call does nothing.
pub fn install_log_bridge() {
    static BRIDGE: LogBridge = LogBridge;
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}
