//! [`Reloadable`]: a value that readers load without a lock and a reload
//! swaps whole, as `arc-swap` does for rustls server configs. The TLS
//! material, the JWT keys and the catalogs ([`LiveCatalogs`]) are each one.
//!
//! ```
//! use errmap_server::reload::Reloadable;
//!
//! let keys = Reloadable::new(vec!["key-1"]);
//! let reader = keys.clone();
//! assert_eq!(*reader.load(), ["key-1"]);
//! // A reload builds the new value whole, and swaps it in only when valid.
//! keys.store(vec!["key-1", "key-2"]);
//! assert_eq!(reader.load().len(), 2);
//! ```

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;

/// The catalogs a server serves, which a reload replaces whole: every
/// part of the server (the lookup service, the response layer, the HTTP
/// API and pages, reflection, metrics) loads the current set per call.
pub type LiveCatalogs = Reloadable<errmap::Catalogs>;

/// A shared value that can be replaced while it is read. Clones share it.
///
/// Readers [`load`](Self::load) the current value without a lock; a reload
/// [`store`](Self::store)s a new one, built and checked beforehand, and the
/// old value is freed when its last reader drops it.
pub struct Reloadable<T> {
    current: Arc<ArcSwap<T>>,
}

impl<T> Reloadable<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(value)),
        }
    }

    /// The current value.
    #[inline]
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Makes `value` the current one; readers that loaded the old value
    /// keep it until they drop it.
    pub fn store(&self, value: T) {
        self.current.store(Arc::new(value));
    }
}

impl<T> From<T> for Reloadable<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Default> Default for Reloadable<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Reloadable").field(&self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_what_it_loaded_and_the_old_value_is_freed_after_it() {
        let value = Reloadable::new(String::from("old"));
        let held = value.load();
        value.store(String::from("new"));
        assert_eq!(*held, "old");
        assert_eq!(*value.load(), "new");
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_none(), "the old value is freed");
    }
}
