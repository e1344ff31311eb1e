//! Whether a new version of a catalog keeps its clients working: what
//! `errmap check NEW --against OLD` prints, and what a server logs when a
//! reload changes its catalogs.
//!
//! `buf breaking` checks the wire; this checks what the catalog's options
//! mean. A client branches on a code's number or name, on its gRPC code and
//! HTTP status, on the `ErrorInfo` domain, and reads the metadata keys its
//! message template fills. Changing any of those breaks it; adding codes,
//! rewording messages and adding translations or placeholders does not.
//!
//! ```
//! use errmap_spec::compat::{compare, Kind};
//! # use errmap_spec::{CatalogSpec, EntrySpec};
//! # fn entry(number: i32, name: &str, grpc: &'static str) -> EntrySpec {
//! #     EntrySpec { number, name: name.into(), grpc_code: grpc, grpc_number: 5, http_status: 404,
//! #         category: "c".into(), message: "M.".into(), retry_delay: None,
//! #         translations: vec![], params: vec![] }
//! # }
//! # fn catalog(entries: Vec<EntrySpec>) -> CatalogSpec {
//! #     CatalogSpec { domain: "shop.example.com".into(), enum_name: "shop.v1.ShopError".into(),
//! #         short_name: "ShopError".into(), file: "shop.proto".into(), entries,
//! #         reserved_numbers: vec![] }
//! # }
//! let old = [catalog(vec![entry(1, "SHOP_OUT_OF_STOCK", "NOT_FOUND")])];
//! let new = [catalog(vec![
//!     entry(1, "SHOP_OUT_OF_STOCK", "FAILED_PRECONDITION"),
//!     entry(2, "SHOP_CARD_DECLINED", "FAILED_PRECONDITION"),
//! ])];
//! let findings = compare(&old, &new);
//! assert_eq!(findings[0].to_string(),
//!     "shop.v1.ShopError.SHOP_OUT_OF_STOCK (1): breaking: gRPC code NOT_FOUND became FAILED_PRECONDITION");
//! assert_eq!(findings[1].kind, Kind::Added);
//! assert!(!findings[1].breaking);
//! ```

use std::{collections::HashMap, fmt};

use crate::{CatalogSpec, EntrySpec};

/// What changed about one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A number is gone. Breaking unless the new enum reserves it.
    Removed,
    /// A number has another name.
    Renamed,
    /// A name has another number.
    Moved,
    /// The gRPC code changed.
    GrpcCode,
    /// The legacy HTTP status changed.
    HttpStatus,
    /// The catalog's `ErrorInfo` domain changed.
    Domain,
    /// A placeholder of the message template is gone (or renamed): the
    /// metadata key a client reads is no longer sent.
    PlaceholderRemoved,
    /// A new value.
    Added,
    /// The English message reads differently.
    Message,
    /// A translation was added.
    TranslationAdded,
    /// A translation was removed: callers asking for it get English.
    TranslationRemoved,
    /// A translation reads differently.
    TranslationChanged,
    /// A new placeholder, and so a new metadata key.
    PlaceholderAdded,
    /// The category changed.
    Category,
    /// The retry delay changed, was added, or was removed.
    RetryDelay,
}

impl Kind {
    /// The kind's name in `--json`, in snake_case.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Removed => "removed",
            Kind::Renamed => "renamed",
            Kind::Moved => "moved",
            Kind::GrpcCode => "grpc_code",
            Kind::HttpStatus => "http_status",
            Kind::Domain => "domain",
            Kind::PlaceholderRemoved => "placeholder_removed",
            Kind::Added => "added",
            Kind::Message => "message",
            Kind::TranslationAdded => "translation_added",
            Kind::TranslationRemoved => "translation_removed",
            Kind::TranslationChanged => "translation_changed",
            Kind::PlaceholderAdded => "placeholder_added",
            Kind::Category => "category",
            Kind::RetryDelay => "retry_delay",
        }
    }
}

/// One change to one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The value, `ENUM.VALUE` with the enum's full name: the new name,
    /// or the old one for a value that is gone.
    pub value: String,
    /// The value's number (the new one for a value that moved).
    pub number: i32,
    /// What changed.
    pub kind: Kind,
    /// Whether clients built against the old catalog may break.
    pub breaking: bool,
    /// What changed, in words.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}: {}",
            self.value,
            self.number,
            if self.breaking {
                "breaking"
            } else {
                "compatible"
            },
            self.detail
        )
    }
}

/// Every change from `old` to `new`, catalogs matched by their enum's full
/// name, in the order of `new`'s catalogs (then those only `old` has), each
/// catalog's findings by number.
pub fn compare(old: &[CatalogSpec], new: &[CatalogSpec]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for catalog in new {
        match old.iter().find(|o| o.enum_name == catalog.enum_name) {
            Some(before) => compare_catalog(before, catalog, &mut findings),
            None => {
                for e in &catalog.entries {
                    findings.push(finding(
                        catalog,
                        e,
                        Kind::Added,
                        false,
                        "a new value (in a new catalog)".to_owned(),
                    ));
                }
            }
        }
    }
    for before in old {
        if !new.iter().any(|n| n.enum_name == before.enum_name) {
            for e in &before.entries {
                findings.push(finding(
                    before,
                    e,
                    Kind::Removed,
                    true,
                    format!("removed with its whole catalog {}", before.enum_name),
                ));
            }
        }
    }
    findings
}

fn finding(
    catalog: &CatalogSpec,
    e: &EntrySpec,
    kind: Kind,
    breaking: bool,
    detail: String,
) -> Finding {
    Finding {
        value: format!("{}.{}", catalog.enum_name, e.name),
        number: e.number,
        kind,
        breaking,
        detail,
    }
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn compare_catalog(old: &CatalogSpec, new: &CatalogSpec, out: &mut Vec<Finding>) {
    let start = out.len();
    // Indexes, so that a catalog of thousands of codes compares in
    // n log n (a server compares on every reload).
    let by_number = |c: &'_ CatalogSpec| -> HashMap<i32, usize> {
        c.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.number, i))
            .collect()
    };
    let (old_numbers, new_numbers) = (by_number(old), by_number(new));
    let old_names: HashMap<&str, usize> = old
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    for before in &old.entries {
        let Some(after) = new_numbers.get(&before.number).map(|&i| &new.entries[i]) else {
            let reserved = new
                .reserved_numbers
                .iter()
                .any(|r| r.contains(&before.number));
            let detail = if reserved {
                "removed, and its number is reserved".to_owned()
            } else {
                "removed without reserving its number; add `reserved` so that it is never reused"
                    .to_owned()
            };
            out.push(finding(old, before, Kind::Removed, !reserved, detail));
            continue;
        };
        let mut push = |kind: Kind, breaking: bool, detail: String| {
            out.push(finding(new, after, kind, breaking, detail));
        };
        if after.name != before.name {
            push(
                Kind::Renamed,
                true,
                format!(
                    "was named {}; the reason clients branch on changed",
                    before.name
                ),
            );
        }
        if old.domain != new.domain {
            push(
                Kind::Domain,
                true,
                format!(
                    "the ErrorInfo domain {:?} became {:?}",
                    old.domain, new.domain
                ),
            );
        }
        let mut field = |kind: Kind,
                         breaking: bool,
                         what: &str,
                         was: &dyn fmt::Display,
                         now: &dyn fmt::Display| {
            push(kind, breaking, format!("{what} {was} became {now}"));
        };
        if after.grpc_code != before.grpc_code {
            field(
                Kind::GrpcCode,
                true,
                "gRPC code",
                &before.grpc_code,
                &after.grpc_code,
            );
        }
        if after.http_status != before.http_status {
            field(
                Kind::HttpStatus,
                true,
                "HTTP status",
                &before.http_status,
                &after.http_status,
            );
        }
        if after.category != before.category {
            field(
                Kind::Category,
                false,
                "category",
                &before.category,
                &after.category,
            );
        }
        let removed: Vec<&str> = before
            .params
            .iter()
            .filter(|p| !after.params.contains(p))
            .map(String::as_str)
            .collect();
        let added: Vec<&str> = after
            .params
            .iter()
            .filter(|p| !before.params.contains(p))
            .map(String::as_str)
            .collect();
        let renamed = removed.len() == 1 && added.len() == 1;
        if !removed.is_empty() {
            let detail = if renamed {
                format!(
                    "placeholder {} was renamed {}; clients reading ErrorInfo.metadata[{:?}] get nothing",
                    list(&removed),
                    list(&added),
                    removed[0]
                )
            } else {
                format!(
                    "placeholder {} removed; clients reading its ErrorInfo.metadata key get nothing",
                    list(&removed)
                )
            };
            push(Kind::PlaceholderRemoved, true, detail);
        }
        if !added.is_empty() && !renamed {
            push(
                Kind::PlaceholderAdded,
                false,
                format!("new placeholder {}", list(&added)),
            );
        }
        if after.message != before.message {
            push(
                Kind::Message,
                false,
                format!("message {:?} became {:?}", before.message, after.message),
            );
        }
        for (locale, text) in &after.translations {
            match before.translations.iter().find(|(l, _)| l == locale) {
                None => push(
                    Kind::TranslationAdded,
                    false,
                    format!("new {locale} message"),
                ),
                Some((_, old_text)) if old_text != text => push(
                    Kind::TranslationChanged,
                    false,
                    format!("{locale} message {old_text:?} became {text:?}"),
                ),
                Some(_) => {}
            }
        }
        for (locale, _) in &before.translations {
            if !after.translations.iter().any(|(l, _)| l == locale) {
                push(
                    Kind::TranslationRemoved,
                    false,
                    format!("{locale} message removed; callers asking for {locale} get English"),
                );
            }
        }
        if after.retry_delay != before.retry_delay {
            let show = |d: Option<(u64, u32)>| match d {
                None => "none".to_owned(),
                Some((s, 0)) => format!("{s}s"),
                Some((s, n)) => format!("{}s", s as f64 + f64::from(n) / 1e9),
            };
            push(
                Kind::RetryDelay,
                false,
                format!(
                    "retry delay {} became {}",
                    show(before.retry_delay),
                    show(after.retry_delay)
                ),
            );
        }
    }
    for after in &new.entries {
        if old_numbers.contains_key(&after.number) {
            continue;
        }
        match old_names.get(after.name.as_str()).map(|&i| &old.entries[i]) {
            Some(before) => out.push(finding(
                new,
                after,
                Kind::Moved,
                true,
                format!(
                    "the name had number {}; clients that map numbers to names disagree",
                    before.number
                ),
            )),
            None => out.push(finding(
                new,
                after,
                Kind::Added,
                false,
                "a new value".to_owned(),
            )),
        }
    }
    // A name that moved to a number that still exists is found from the
    // number's side as a rename; say that the name moved too.
    for after in &new.entries {
        if let Some(before) = old_names
            .get(after.name.as_str())
            .map(|&i| &old.entries[i])
            .filter(|e| e.number != after.number)
        {
            if old_numbers.contains_key(&after.number) {
                out.push(finding(
                    new,
                    after,
                    Kind::Moved,
                    true,
                    format!(
                        "the name had number {}; clients that map numbers to names disagree",
                        before.number
                    ),
                ));
            }
        }
    }
    out[start..].sort_by_key(|f| (f.number, f.kind));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: i32, name: &str) -> EntrySpec {
        EntrySpec {
            number,
            name: name.to_owned(),
            grpc_code: "NOT_FOUND",
            grpc_number: 5,
            http_status: 404,
            category: "c".to_owned(),
            message: "Missing {item}.".to_owned(),
            retry_delay: None,
            translations: vec![("ru-RU".to_owned(), "Нет {item}.".to_owned())],
            params: vec!["item".to_owned()],
        }
    }

    fn catalog(entries: Vec<EntrySpec>) -> CatalogSpec {
        CatalogSpec {
            domain: "x.example.com".to_owned(),
            enum_name: "x.v1.XError".to_owned(),
            short_name: "XError".to_owned(),
            file: "x.proto".to_owned(),
            entries,
            reserved_numbers: vec![],
        }
    }

    fn kinds(old: Vec<EntrySpec>, new: CatalogSpec) -> Vec<(i32, Kind, bool)> {
        compare(&[catalog(old)], &[new])
            .into_iter()
            .map(|f| (f.number, f.kind, f.breaking))
            .collect()
    }

    #[test]
    fn the_same_catalog_has_no_findings() {
        let c = catalog(vec![entry(1, "X_ONE"), entry(2, "X_TWO")]);
        assert!(compare(std::slice::from_ref(&c), std::slice::from_ref(&c)).is_empty());
    }

    #[test]
    fn a_swap_of_two_names_is_two_renames_and_two_moves() {
        let new = catalog(vec![entry(1, "X_TWO"), entry(2, "X_ONE")]);
        assert_eq!(
            kinds(vec![entry(1, "X_ONE"), entry(2, "X_TWO")], new),
            [
                (1, Kind::Renamed, true),
                (1, Kind::Moved, true),
                (2, Kind::Renamed, true),
                (2, Kind::Moved, true)
            ]
        );
    }

    #[test]
    fn removal_breaks_unless_reserved() {
        let mut new = catalog(vec![entry(1, "X_ONE")]);
        assert_eq!(
            kinds(vec![entry(1, "X_ONE"), entry(2, "X_TWO")], new.clone()),
            [(2, Kind::Removed, true)]
        );
        new.reserved_numbers.push(2..=2);
        assert_eq!(
            kinds(vec![entry(1, "X_ONE"), entry(2, "X_TWO")], new),
            [(2, Kind::Removed, false)]
        );
    }

    #[test]
    fn a_renamed_placeholder_breaks_and_a_new_one_does_not() {
        let mut renamed = entry(1, "X_ONE");
        renamed.params = vec!["thing".to_owned()];
        renamed.message = "Missing {thing}.".to_owned();
        let found = compare(
            &[catalog(vec![entry(1, "X_ONE")])],
            &[catalog(vec![renamed])],
        );
        assert_eq!(found[0].kind, Kind::PlaceholderRemoved);
        assert!(
            found[0].detail.contains("{item} was renamed {thing}"),
            "{}",
            found[0].detail
        );
        assert!(found.iter().all(|f| f.kind != Kind::PlaceholderAdded));

        let mut more = entry(1, "X_ONE");
        more.params.push("shelf".to_owned());
        assert_eq!(
            kinds(vec![entry(1, "X_ONE")], catalog(vec![more])),
            [(1, Kind::PlaceholderAdded, false)]
        );
    }
}
