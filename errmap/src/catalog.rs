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

use std::{borrow::Cow, fmt, sync::OnceLock, time::Duration};

use tonic::Code;

use crate::{
    locale::{AcceptLanguage, Locales},
    name_hash::name_hash,
    prebuilt::Prebuilt,
};

/// A catalog's text: borrowed from the binary for a compiled catalog,
/// owned by the table for one loaded at run time (and freed with it).
pub(crate) type Text = Cow<'static, str>;

/// Everything a catalog says about one error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub(crate) number: i32,
    pub(crate) number_str: Text,
    pub(crate) name: Text,
    pub(crate) grpc_code: Code,
    pub(crate) http_status: u16,
    pub(crate) category: Text,
    pub(crate) message: Text,
    pub(crate) retry_delay: Option<Duration>,
    pub(crate) translations: Cow<'static, [(&'static str, Text)]>,
    pub(crate) params: Cow<'static, [Text]>,
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
            number_str: Cow::Borrowed(number_str),
            name: Cow::Borrowed(name),
            grpc_code,
            http_status,
            category: Cow::Borrowed(category),
            message: Cow::Borrowed(message),
            retry_delay,
            translations: Cow::Borrowed(&[]),
            params: Cow::Borrowed(&[]),
        }
    }

    /// The entry with its messages in other locales (BCP 47 tag, text),
    /// sorted by tag.
    #[doc(hidden)]
    pub const fn with_translations(
        mut self,
        translations: &'static [(&'static str, Text)],
    ) -> Self {
        // The field replaced is the empty borrowed slice `new` put there;
        // forgetting it frees nothing (a const fn may not run a destructor).
        std::mem::forget(std::mem::replace(
            &mut self.translations,
            Cow::Borrowed(translations),
        ));
        self
    }

    /// The entry with the placeholders of its message template, in order.
    #[doc(hidden)]
    pub const fn with_params(mut self, params: &'static [Text]) -> Self {
        std::mem::forget(std::mem::replace(&mut self.params, Cow::Borrowed(params)));
        self
    }

    /// An entry that owns its texts, for a catalog loaded at run time.
    /// Locale tags are interned (a catalog has a handful, from a small
    /// set), everything else is freed with the table.
    pub(crate) fn owned(spec: &errmap_spec::EntrySpec) -> Self {
        Self {
            number: spec.number,
            number_str: Cow::Owned(spec.number.to_string()),
            name: Cow::Owned(spec.name.clone()),
            grpc_code: Code::from_i32(spec.grpc_number),
            http_status: spec.http_status,
            category: Cow::Owned(spec.category.clone()),
            message: Cow::Owned(spec.message.clone()),
            retry_delay: spec.retry_delay.map(|(s, n)| Duration::new(s, n)),
            translations: Cow::Owned(
                spec.translations
                    .iter()
                    .map(|(locale, text)| (intern(locale), Cow::Owned(text.clone())))
                    .collect(),
            ),
            params: Cow::Owned(spec.params.iter().cloned().map(Cow::Owned).collect()),
        }
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
    pub fn message_in(&self, locale: &str) -> Option<&str> {
        if locale == "en-US" {
            return Some(&self.message);
        }
        self.translations
            .iter()
            .find(|(tag, _)| *tag == locale)
            .map(|(_, text)| &**text)
    }

    /// The messages in other locales than en-US: (BCP 47 tag, text), sorted
    /// by tag.
    pub fn translations(&self) -> impl ExactSizeIterator<Item = (&'static str, &str)> + '_ {
        self.translations.iter().map(|(tag, text)| (*tag, &**text))
    }

    /// The placeholders of the message template, each once, in the order
    /// they first appear in the English message; empty for a plain
    /// message. [`StatusBuilder::arg`](crate::StatusBuilder::arg) fills them.
    pub fn params(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.params.iter().map(|p| &**p)
    }

    /// Whether the message is a template with placeholders to fill.
    pub fn is_template(&self) -> bool {
        !self.params.is_empty()
    }

    /// The numeric code, for example `11`. It is also sent as
    /// `ErrorInfo.metadata["code"]`.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// [`name`](Self::name), to keep: borrowed from the binary for a
    /// compiled catalog (no copy), a copy for one loaded at run time.
    pub fn shared_name(&self) -> Cow<'static, str> {
        self.name.clone()
    }

    /// The numeric code in decimal, as sent in `ErrorInfo.metadata["code"]`.
    pub fn number_str(&self) -> &str {
        &self.number_str
    }

    /// The name, which is also the `ErrorInfo.reason`, for example
    /// `"AUTH_EXPIRED_TOKEN"`.
    pub fn name(&self) -> &str {
        &self.name
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
    pub fn category(&self) -> &str {
        &self.category
    }

    /// The English message, also sent as the default `grpc-message` and as
    /// the `LocalizedMessage` for `en-US`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long a caller should wait before retrying, for the codes that ask
    /// for a retry (sent as `RetryInfo`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }
}

/// `text` as a `&'static str`, the same one for the same text: the locale
/// tags of catalogs loaded at run time, and the pushback digits. These are
/// few and short (a catalog has a handful of locales, all valid BCP 47, and
/// a handful of delays), so reloads do not grow this set unless they bring
/// new ones.
pub(crate) fn intern(text: &str) -> &'static str {
    use std::sync::{Mutex, PoisonError};
    static KNOWN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = known.iter().find(|t| **t == text) {
        return found;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    known.push(leaked);
    leaked
}

/// A catalog's table, as a [`Catalogs`](crate::Catalogs) set holds it:
/// compiled in (static), or loaded at run time (shared, and freed with its
/// last handle, so that a reloaded catalog does not stay behind). Cheap to
/// clone; it derefs to the [`CatalogTable`].
#[derive(Clone)]
pub struct TableRef(Held);

#[derive(Clone)]
enum Held {
    Static(&'static CatalogTable),
    Shared(std::sync::Arc<CatalogTable>),
}

impl std::ops::Deref for TableRef {
    type Target = CatalogTable;

    #[inline]
    fn deref(&self) -> &CatalogTable {
        match &self.0 {
            Held::Static(table) => table,
            Held::Shared(table) => table,
        }
    }
}

impl AsRef<CatalogTable> for TableRef {
    fn as_ref(&self) -> &CatalogTable {
        self
    }
}

impl AsRef<CatalogTable> for CatalogTable {
    fn as_ref(&self) -> &CatalogTable {
        self
    }
}

impl fmt::Debug for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl From<&'static CatalogTable> for TableRef {
    fn from(table: &'static CatalogTable) -> Self {
        Self(Held::Static(table))
    }
}

impl From<CatalogTable> for TableRef {
    fn from(table: CatalogTable) -> Self {
        Self(Held::Shared(std::sync::Arc::new(table)))
    }
}

impl TableRef {
    /// Whether both handles are the same table.
    pub fn same(&self, other: &TableRef) -> bool {
        std::ptr::eq::<CatalogTable>(&**self, &**other)
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
    pub(crate) domain: Text,
    pub(crate) enum_name: Text,
    pub(crate) entries: Cow<'static, [CatalogEntry]>,
    by_number: ByNumber,
    name_seed: u64,
    by_name: Box<[u16]>,
    /// The longest probe any name needs past its home slot (0: perfect).
    max_probe: usize,
    max_name_len: usize,
    content_hash: u64,
    pub(crate) locales: Locales,
    /// `locales × entries`, locale-major.
    pub(crate) prebuilt: OnceLock<Box<[Prebuilt]>>,
    /// The encoded `FileDescriptorSet` a table loaded at run time was read
    /// from (shared by the tables of one file), for reflection.
    descriptor_set: Option<bytes::Bytes>,
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

/// The by-name index: a power-of-two table of entry indexes, open
/// addressing with linear probing, and the longest probe any name needs.
/// For a catalog of up to [`MAX_PERFECT`] names, a seed is searched for
/// under which every name gets its own home slot, so that a lookup is one
/// hash and one comparison (`max_probe` 0); a larger catalog (a search
/// would take too long) probes a few slots more.
fn name_index(names: &[&str]) -> (u64, Box<[u16]>, usize) {
    let base = (names.len() * 2).next_power_of_two().max(8);
    if names.len() <= MAX_PERFECT {
        let mut size = base;
        // Each doubling makes a perfect placement likelier; the tables stay
        // small (at most 64 × 256 slots).
        while size <= base * 64 {
            let mut slots = vec![NO_ENTRY; size];
            for seed in 0..2_000u64 {
                slots.fill(NO_ENTRY);
                let fits = names.iter().enumerate().all(|(i, name)| {
                    let slot = name_hash(seed, name.as_bytes()) as usize & (size - 1);
                    let free = slots[slot] == NO_ENTRY;
                    slots[slot] = i as u16;
                    free
                });
                if fits {
                    return (seed, slots.into_boxed_slice(), 0);
                }
            }
            size *= 2;
        }
    }
    let mut slots = vec![NO_ENTRY; base];
    let mut max_probe = 0;
    for (i, name) in names.iter().enumerate() {
        let mut slot = name_hash(0, name.as_bytes()) as usize & (base - 1);
        let mut probe = 0;
        while slots[slot] != NO_ENTRY {
            slot = (slot + 1) & (base - 1);
            probe += 1;
        }
        slots[slot] = i as u16;
        max_probe = max_probe.max(probe);
    }
    (0, slots.into_boxed_slice(), max_probe)
}

/// The most names for which a perfect placement is searched.
const MAX_PERFECT: usize = 256;

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
        for param in e.params.iter() {
            eat(param.as_bytes());
        }
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
        for (locale, text) in e.translations.iter() {
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
        domain: impl Into<Cow<'static, str>>,
        enum_name: impl Into<Cow<'static, str>>,
        entries: impl Into<Cow<'static, [CatalogEntry]>>,
    ) -> Self {
        let (domain, enum_name, entries) = (domain.into(), enum_name.into(), entries.into());
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
        let names: Vec<&str> = entries.iter().map(|e| &*e.name).collect();
        let (name_seed, by_name, max_probe) = name_index(&names);
        let max_name_len = names.iter().map(|n| n.len()).max().unwrap_or(0);
        let content_hash = content_hash(&domain, &enum_name, &entries);
        let locales = Locales::new(
            entries
                .first()
                .into_iter()
                .flat_map(|e| e.translations.iter().map(|(tag, _)| *tag)),
        );
        Self {
            domain,
            enum_name,
            entries,
            by_number,
            name_seed,
            by_name,
            max_probe,
            max_name_len,
            content_hash,
            locales,
            prebuilt: OnceLock::new(),
            descriptor_set: None,
        }
    }

    /// The table, remembering the encoded `FileDescriptorSet` it was read
    /// from.
    pub(crate) fn with_descriptor_set(mut self, set: bytes::Bytes) -> Self {
        self.descriptor_set = Some(set);
        self
    }

    /// The encoded `FileDescriptorSet` a catalog loaded at run time was
    /// read from (a server's reflection serves it); `None` for a compiled
    /// catalog, whose descriptors its crate registers.
    pub fn descriptor_set(&self) -> Option<&bytes::Bytes> {
        self.descriptor_set.as_ref()
    }

    /// The `ErrorInfo.domain` of every code of the catalog.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// [`domain`](Self::domain), to keep: borrowed from the binary for a
    /// compiled catalog (no copy), a copy for one loaded at run time.
    pub fn shared_domain(&self) -> Cow<'static, str> {
        self.domain.clone()
    }

    /// The full name of the catalog's enum, e.g. `errmap.v1.ErrorCode`.
    pub fn enum_name(&self) -> &str {
        &self.enum_name
    }

    /// Every entry, in code order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
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
    #[inline(always)]
    pub fn index_of_name(&self, name: &[u8]) -> Option<usize> {
        if name.len() > self.max_name_len {
            return None;
        }
        let slot = name_hash(self.name_seed, name) as usize & (self.by_name.len() - 1);
        match self.by_name[slot] {
            NO_ENTRY => None,
            i if self.entries[usize::from(i)].name.as_bytes() == name => Some(usize::from(i)),
            // A perfect table (every catalog of up to 256 codes) looks once.
            _ if self.max_probe == 0 => None,
            _ => self.probe_from(slot, name),
        }
    }

    /// The rest of a lookup by name in a probing table, past the home
    /// slot `home`.
    #[cold]
    fn probe_from(&self, home: usize, name: &[u8]) -> Option<usize> {
        let mask = self.by_name.len() - 1;
        let mut slot = home;
        for _ in 0..self.max_probe {
            slot = (slot + 1) & mask;
            match self.by_name[slot] {
                NO_ENTRY => return None,
                i if self.entries[usize::from(i)].name.as_bytes() == name => {
                    return Some(usize::from(i))
                }
                _ => {}
            }
        }
        None
    }

    /// The entry numbered `number`.
    pub fn by_number(&self, number: i32) -> Option<&CatalogEntry> {
        Some(&self.entries[self.index_of_number(number)?])
    }

    /// The entry named `name`.
    pub fn by_name(&self, name: &str) -> Option<&CatalogEntry> {
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
    pub fn categories(&self) -> impl Iterator<Item = &str> + '_ {
        let entries = &self.entries;
        entries.iter().enumerate().filter_map(move |(i, e)| {
            (!entries[..i].iter().any(|p| p.category == e.category)).then_some(&*e.category)
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
    pub fn position_of(&self, entry: &CatalogEntry) -> usize {
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
    fn a_large_catalog_is_indexed_quickly_and_every_name_is_found() {
        let names: Vec<String> = (0..5_000).map(|i| format!("BULK_CODE_{i}")).collect();
        let entries: Vec<CatalogEntry> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut e =
                    CatalogEntry::new(i as i32, "", "", Code::NotFound, 404, "x", "m.", None);
                e.name = Cow::Owned(name.clone());
                e.number_str = Cow::Owned(i.to_string());
                e
            })
            .collect();
        let table = CatalogTable::new("bulk.example.com", "x.v1.Bulk", entries);
        assert!(table.max_probe > 0, "a probing table");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.index_of_name(name.as_bytes()), Some(i));
        }
        assert_eq!(table.index_of_name(b"BULK_CODE_5000"), None);
        assert_eq!(table.index_of_name(b"NOT_THERE"), None);
        // The default catalog's table is perfect: one look per lookup.
        assert_eq!(<crate::ErrorCode as crate::Catalog>::table().max_probe, 0);
    }

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
