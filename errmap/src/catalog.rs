//! One catalog's data: its [`CatalogTable`] of [`CatalogEntry`] values.
//!
//! A catalog is the set of error codes of one `ErrorInfo` domain. Its facts
//! live in a table built once: from a compiled-in enum (the auth API's
//! [`ErrorCode`](crate::ErrorCode), or a team's enum made by `errmap-build`),
//! or from a descriptor set at run time. The table looks codes up by number
//! and by name in O(1), with no allocation; the enum plugs into the runtime
//! through the [`Catalog`](crate::Catalog) trait. Statuses are built from the
//! table by [`crate::status`], and the Markdown catalog by
//! [`crate::markdown`].

use std::{fmt, sync::OnceLock, time::Duration};

use tonic::Code;

use crate::{
    locale::{AcceptLanguage, Locales},
    name_hash::name_hash,
    prebuilt::Prebuilt,
};

/// Everything a catalog says about one error code.
#[derive(Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub(crate) number: i32,
    pub(crate) number_str: &'static str,
    pub(crate) name: &'static str,
    pub(crate) grpc_code: Code,
    pub(crate) http_status: u16,
    pub(crate) category: &'static str,
    pub(crate) message: &'static str,
    pub(crate) retry_delay: Option<Duration>,
    pub(crate) translations: &'static [(&'static str, &'static str)],
}

impl CatalogEntry {
    /// An entry; generated code and the run-time loader make these from a
    /// validated catalog (see `errmap-build`). `number_str` is `number` in
    /// decimal.
    #[allow(clippy::too_many_arguments)]
    #[doc(hidden)]
    pub const fn new(
        number: i32,
        number_str: &'static str,
        name: &'static str,
        grpc_code: Code,
        http_status: u16,
        category: &'static str,
        message: &'static str,
        retry_delay: Option<Duration>,
    ) -> Self {
        Self {
            number,
            number_str,
            name,
            grpc_code,
            http_status,
            category,
            message,
            retry_delay,
            translations: &[],
        }
    }

    /// The entry with its messages in other locales (BCP 47 tag, text),
    /// sorted by tag.
    #[doc(hidden)]
    pub const fn with_translations(
        mut self,
        translations: &'static [(&'static str, &'static str)],
    ) -> Self {
        self.translations = translations;
        self
    }

    /// The message in `locale` (a BCP 47 tag, e.g. `ru-RU`; `en-US` is
    /// [`message`](Self::message)), if the catalog has it.
    ///
    /// ```
    /// use errmap::{Catalog, ErrorCode};
    ///
    /// let entry = ErrorCode::AuthExpiredToken.entry();
    /// assert_eq!(entry.message_in("en-US"), Some(entry.message()));
    /// assert_eq!(entry.message_in("ru-RU"), Some("Срок действия токена истёк, получите новый."));
    /// assert_eq!(entry.message_in("fr-FR"), None);
    /// ```
    pub fn message_in(&self, locale: &str) -> Option<&'static str> {
        if locale == "en-US" {
            return Some(self.message);
        }
        self.translations
            .iter()
            .find(|(tag, _)| *tag == locale)
            .map(|(_, text)| *text)
    }

    /// The messages in other locales than en-US: (BCP 47 tag, text), sorted
    /// by tag.
    pub fn translations(&self) -> &'static [(&'static str, &'static str)] {
        self.translations
    }

    /// The numeric code, for example `11`. It is also sent as
    /// `ErrorInfo.metadata["code"]`.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The numeric code in decimal, as sent in `ErrorInfo.metadata["code"]`.
    pub fn number_str(&self) -> &'static str {
        self.number_str
    }

    /// The name, which is also the `ErrorInfo.reason`, for example
    /// `"AUTH_EXPIRED_TOKEN"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The gRPC status code this error is sent with.
    pub fn grpc_code(&self) -> Code {
        self.grpc_code
    }

    /// The HTTP status the legacy HTTP API answered with.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The category, for example `"auth_token"`.
    pub fn category(&self) -> &'static str {
        self.category
    }

    /// The English message, also sent as the default `grpc-message` and as
    /// the `LocalizedMessage` for `en-US`.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// How long a caller should wait before retrying, for the codes that ask
    /// for a retry (sent as `RetryInfo`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }
}

const NO_ENTRY: u16 = u16::MAX;

/// How numbers map to entries: a dense table over a small span (every
/// compiled catalog), or a sorted list for sparse proto2 numbers.
#[derive(Debug)]
enum ByNumber {
    Dense { min: i32, slots: Box<[u16]> },
    Sorted(Box<[(i32, u16)]>),
}

/// The largest number span indexed densely.
const MAX_DENSE_SPAN: i64 = 1 << 16;

/// One catalog's facts and indexes: its domain, the enum's full name, its
/// entries in code order, O(1) lookups by number and by name (no
/// allocation), its locales, its pre-encoded statuses (one per code and
/// locale), and a content hash.
pub struct CatalogTable {
    pub(crate) domain: &'static str,
    pub(crate) enum_name: &'static str,
    pub(crate) entries: &'static [CatalogEntry],
    by_number: ByNumber,
    name_seed: u64,
    by_name: Box<[u16]>,
    max_name_len: usize,
    content_hash: u64,
    pub(crate) locales: Locales,
    /// `locales × entries`, locale-major.
    pub(crate) prebuilt: OnceLock<Box<[Prebuilt]>>,
}

impl fmt::Debug for CatalogTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogTable")
            .field("domain", &self.domain)
            .field("enum_name", &self.enum_name)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Picks the smallest power-of-two table and a seed under which every name
/// gets its own slot, so that a by-name lookup is one hash and one
/// comparison.
fn perfect_hash(names: &[&str]) -> (u64, Box<[u16]>) {
    let mut size = (names.len() * 2).next_power_of_two().max(8);
    loop {
        let mut slots = vec![NO_ENTRY; size];
        for seed in 0..20_000u64 {
            slots.fill(NO_ENTRY);
            let fits = names.iter().enumerate().all(|(i, name)| {
                let slot = name_hash(seed, name.as_bytes()) as usize & (size - 1);
                let free = slots[slot] == NO_ENTRY;
                slots[slot] = i as u16;
                free
            });
            if fits {
                return (seed, slots.into_boxed_slice());
            }
        }
        size *= 2;
    }
}

/// FNV-1a over the parts of every entry, in order: what `ListCatalogs`
/// reports so that clients can cache a catalog.
fn content_hash(domain: &str, enum_name: &str, entries: &[CatalogEntry]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([0xff].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(domain.as_bytes());
    eat(enum_name.as_bytes());
    for e in entries {
        eat(&e.number.to_le_bytes());
        eat(e.name.as_bytes());
        eat(&(e.grpc_code as i32).to_le_bytes());
        eat(&e.http_status.to_le_bytes());
        eat(e.category.as_bytes());
        eat(e.message.as_bytes());
        match e.retry_delay {
            Some(d) => {
                eat(&d.as_secs().to_le_bytes());
                eat(&d.subsec_nanos().to_le_bytes());
            }
            None => eat(b"-"),
        }
        for (locale, text) in e.translations {
            eat(locale.as_bytes());
            eat(text.as_bytes());
        }
    }
    h
}

impl CatalogTable {
    /// Indexes `entries`, which must be sorted by number, with distinct
    /// numbers and names, as a validated catalog is (at most 65,534
    /// entries).
    #[doc(hidden)]
    pub fn new(
        domain: &'static str,
        enum_name: &'static str,
        entries: &'static [CatalogEntry],
    ) -> Self {
        assert!(entries.len() < usize::from(NO_ENTRY), "too many entries");
        let by_number = match (entries.first(), entries.last()) {
            (Some(first), Some(last))
                if i64::from(last.number) - i64::from(first.number) < MAX_DENSE_SPAN =>
            {
                let mut slots = vec![NO_ENTRY; (last.number - first.number) as usize + 1];
                for (i, e) in entries.iter().enumerate() {
                    slots[(e.number - first.number) as usize] = i as u16;
                }
                ByNumber::Dense {
                    min: first.number,
                    slots: slots.into_boxed_slice(),
                }
            }
            _ => ByNumber::Sorted(
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.number, i as u16))
                    .collect(),
            ),
        };
        let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        let (name_seed, by_name) = perfect_hash(&names);
        Self {
            domain,
            enum_name,
            entries,
            by_number,
            name_seed,
            by_name,
            max_name_len: names.iter().map(|n| n.len()).max().unwrap_or(0),
            content_hash: content_hash(domain, enum_name, entries),
            locales: Locales::new(
                entries
                    .first()
                    .into_iter()
                    .flat_map(|e| e.translations.iter().map(|(tag, _)| *tag)),
            ),
            prebuilt: OnceLock::new(),
        }
    }

    /// The `ErrorInfo.domain` of every code of the catalog.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// The full name of the catalog's enum, e.g. `errmap.v1.ErrorCode`.
    pub fn enum_name(&self) -> &'static str {
        self.enum_name
    }

    /// Every entry, in code order.
    pub fn entries(&self) -> &'static [CatalogEntry] {
        self.entries
    }

    /// A hash of everything the catalog says; it changes when any entry
    /// does.
    pub fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// The index of the entry numbered `number`.
    #[inline]
    pub fn index_of_number(&self, number: i32) -> Option<usize> {
        let slot = match &self.by_number {
            ByNumber::Dense { min, slots } => {
                let at = usize::try_from(i64::from(number) - i64::from(*min)).ok()?;
                *slots.get(at)?
            }
            ByNumber::Sorted(sorted) => {
                let at = sorted.binary_search_by_key(&number, |(n, _)| *n).ok()?;
                sorted[at].1
            }
        };
        (slot != NO_ENTRY).then_some(usize::from(slot))
    }

    /// The index of the entry named `name` (exact match: names are upper
    /// case).
    #[inline]
    pub fn index_of_name(&self, name: &[u8]) -> Option<usize> {
        if name.len() > self.max_name_len {
            return None;
        }
        let slot = name_hash(self.name_seed, name) as usize & (self.by_name.len() - 1);
        match self.by_name[slot] {
            NO_ENTRY => None,
            i => {
                let i = usize::from(i);
                (self.entries[i].name.as_bytes() == name).then_some(i)
            }
        }
    }

    /// The entry numbered `number`.
    pub fn by_number(&self, number: i32) -> Option<&'static CatalogEntry> {
        Some(&self.entries[self.index_of_number(number)?])
    }

    /// The entry named `name`.
    pub fn by_name(&self, name: &str) -> Option<&'static CatalogEntry> {
        Some(&self.entries[self.index_of_name(name.as_bytes())?])
    }

    /// The locales the catalog has messages in: `en-US`, then the others
    /// by tag. (A catalog has every message in every locale: the build
    /// checks see to it.)
    pub fn locales(&self) -> &[&'static str] {
        self.locales.tags()
    }

    /// The locale of this catalog that `wanted`, one language tag, asks
    /// for: the same tag, one it covers as a range (`ru` gives `ru-RU`), or
    /// one of the same language (`ru-UA` gives `ru-RU`), ignoring case;
    /// `None` if the catalog has none of them.
    pub fn locale_for(&self, wanted: &str) -> Option<&'static str> {
        let at = self.locales.lookup(wanted.trim().as_bytes())?;
        Some(self.locales.tags()[at])
    }

    /// The locale of this catalog that a caller's `accept-language` asks
    /// for, by the rules of the [`locale`](crate::locale) module; `en-US`
    /// when nothing matches or there is no header.
    ///
    /// ```
    /// use errmap::{Catalog, ErrorCode};
    ///
    /// let table = ErrorCode::table();
    /// assert_eq!(table.negotiate("de-DE, ru;q=0.8, en;q=0.5"), "ru-RU");
    /// let request = tonic::Request::new(());
    /// assert_eq!(table.negotiate(&request), "en-US");
    /// ```
    pub fn negotiate(&self, from: impl AcceptLanguage) -> &'static str {
        self.locales.tags()[self.negotiate_index(from)]
    }

    /// The index in [`locales`](Self::locales) of the locale `from` asks
    /// for.
    pub(crate) fn negotiate_index(&self, from: impl AcceptLanguage) -> usize {
        from.accept_language()
            .map_or(0, |header| self.locales.negotiate(header))
    }

    /// The distinct categories, in the order they first appear in code
    /// order.
    pub fn categories(&self) -> impl Iterator<Item = &'static str> + '_ {
        let entries = self.entries;
        entries.iter().enumerate().filter_map(move |(i, e)| {
            (!entries[..i].iter().any(|p| p.category == e.category)).then_some(e.category)
        })
    }

    /// Whether `category` is the category of at least one entry.
    pub fn is_category(&self, category: &str) -> bool {
        self.entries.iter().any(|e| e.category == category)
    }

    /// Where [`crate::status`] keeps this table's pre-encoded statuses.
    pub(crate) fn prebuilt_slot(&self) -> &OnceLock<Box<[Prebuilt]>> {
        &self.prebuilt
    }

    /// The index of `entry`, an entry of this table, in constant time.
    ///
    /// # Panics
    ///
    /// If `entry` is not one of this table's entries.
    pub(crate) fn position(&self, entry: &CatalogEntry) -> usize {
        // The entries are one slice: the offset of `entry` in it is its
        // index, found in constant time.
        let start = self.entries.as_ptr() as usize;
        let at = (entry as *const CatalogEntry as usize).wrapping_sub(start)
            / std::mem::size_of::<CatalogEntry>();
        assert!(
            self.entries.get(at).is_some_and(|e| std::ptr::eq(e, entry)),
            "the entry belongs to this table"
        );
        at
    }
}

/// A retry delay in seconds, as the catalog's texts write it: whole
/// seconds without a fraction (`"3"`), others with one (`"0.5"`). The
/// unit is the caller's (`"3 s"` on pages, `"3s"` in the CLI's JSON).
pub fn delay_seconds(delay: Duration) -> String {
    if delay.subsec_nanos() == 0 {
        delay.as_secs().to_string()
    } else {
        delay.as_secs_f64().to_string()
    }
}

/// The canonical gRPC code name of `code`, as in `google.rpc.Code`.
pub fn grpc_code_name(code: Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPARSE: [CatalogEntry; 3] = [
        CatalogEntry::new(-5, "-5", "NEGATIVE", Code::Internal, 500, "x", "m.", None),
        CatalogEntry::new(7, "7", "SEVEN", Code::Internal, 500, "x", "m.", None),
        CatalogEntry::new(
            2_000_000,
            "2000000",
            "FAR",
            Code::Internal,
            500,
            "x",
            "m.",
            None,
        ),
    ];

    #[test]
    fn sparse_numbers_are_found_too() {
        let table = CatalogTable::new("x.example.com", "x.v1.Sparse", &SPARSE);
        assert!(matches!(table.by_number, ByNumber::Sorted(_)));
        for (i, e) in SPARSE.iter().enumerate() {
            assert_eq!(table.index_of_number(e.number()), Some(i));
            assert_eq!(table.index_of_name(e.name().as_bytes()), Some(i));
        }
        assert_eq!(table.index_of_number(8), None);
        assert_eq!(table.index_of_name(b"EIGHT"), None);
        let other = CatalogTable::new("x.example.com", "x.v1.Sparse", &SPARSE[..2]);
        assert_ne!(table.content_hash(), other.content_hash());
    }
}
