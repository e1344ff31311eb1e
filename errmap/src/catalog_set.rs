//! The catalogs a server knows: the default one, compiled in, and any team's
//! catalogs, compiled in by `errmap-build` or loaded at run time from a
//! descriptor set.
//!
//! A [`Catalogs`] value is what the response layer passes through (a status
//! carrying an `ErrorInfo` of any of its domains is a catalog status) and
//! what the lookup service answers from.
//!
//! ```
//! use errmap::{catalog_set::Catalogs, Catalog, ErrorCode};
//!
//! let catalogs = Catalogs::default();
//! assert_eq!(catalogs.default_table().unwrap().domain(), "auth.errmap.dev");
//! assert!(catalogs.by_domain("auth.errmap.dev").is_some());
//! assert!(catalogs.by_domain("shop.example.com").is_none());
//! # let _ = ErrorCode::table();
//! ```
//!
//! A descriptor set made by stock tools (`protoc --include_imports
//! --descriptor_set_out=SET.binpb`, `buf build -o SET.binpb`) is read with
//! [`load_descriptor_set`], under the same rules `errmap-build` applies at
//! build time.

use std::{path::Path, sync::Arc, time::Duration};

use prost_reflect::DescriptorPool;

use crate::{
    catalog::{CatalogEntry, CatalogTable},
    code::Catalog,
    ErrorCode,
};

/// A set of catalogs with distinct domains; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalogs {
    tables: Arc<[&'static CatalogTable]>,
    default: Option<usize>,
}

impl Default for Catalogs {
    /// The auth API's catalog, [`ErrorCode`], alone and as the default.
    fn default() -> Self {
        Self {
            tables: Arc::from([ErrorCode::table()]),
            default: Some(0),
        }
    }
}

/// Why a catalog could not be added or loaded. The message names the file,
/// the enum and the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a `FileDescriptorSet`, or its files do not link.
    #[error("{file}: not a valid FileDescriptorSet ({reason}); make one with `protoc --include_imports --descriptor_set_out` or `buf build -o`")]
    Descriptors {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A catalog in the file breaks a rule.
    #[error("{file}: {problems}")]
    Invalid {
        /// The file.
        file: String,
        /// Every problem, one a line, each naming the enum and the value.
        problems: String,
    },
    /// Two catalogs claim the same domain.
    #[error("{source_name}: {enum_name} has domain {domain:?}, which {other} already serves")]
    DuplicateDomain {
        /// Where the new catalog came from.
        source_name: String,
        /// The new catalog's enum.
        enum_name: String,
        /// The domain.
        domain: String,
        /// The enum already serving it.
        other: String,
    },
}

impl Catalogs {
    /// No catalog at all; add some with [`with`](Self::with).
    pub fn empty() -> Self {
        Self {
            tables: Arc::from([]),
            default: None,
        }
    }

    /// These catalogs plus `table`, which becomes the default if there is
    /// none yet. `source` names where it came from, for the error.
    pub fn with(&self, table: &'static CatalogTable, source: &str) -> Result<Self, CatalogError> {
        if let Some(other) = self.by_domain(table.domain()) {
            return Err(CatalogError::DuplicateDomain {
                source_name: source.to_owned(),
                enum_name: table.enum_name().to_owned(),
                domain: table.domain().to_owned(),
                other: other.enum_name().to_owned(),
            });
        }
        let mut tables = self.tables.to_vec();
        tables.push(table);
        Ok(Self {
            default: self.default.or(Some(tables.len() - 1)),
            tables: tables.into(),
        })
    }

    /// These catalogs plus `C`'s.
    pub fn with_catalog<C: Catalog>(&self) -> Result<Self, CatalogError> {
        self.with(C::table(), C::table().enum_name())
    }

    /// Every catalog, the default first.
    pub fn tables(&self) -> impl Iterator<Item = &'static CatalogTable> + '_ {
        let default = self.default.map(|i| self.tables[i]);
        default.into_iter().chain(
            self.tables
                .iter()
                .enumerate()
                .filter(move |(i, _)| Some(*i) != self.default)
                .map(|(_, t)| *t),
        )
    }

    /// The catalog lookups without a domain use.
    pub fn default_table(&self) -> Option<&'static CatalogTable> {
        self.default.map(|i| self.tables[i])
    }

    /// The catalog of `domain`.
    #[inline]
    pub fn by_domain(&self, domain: &str) -> Option<&'static CatalogTable> {
        self.tables.iter().copied().find(|t| t.domain() == domain)
    }

    /// How many catalogs there are.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

/// Reads every catalog enum of an encoded `FileDescriptorSet` (`file` names
/// it in errors), under the rules `errmap-build` checks, and makes a table
/// of each. errmap's own `errmap.v1.ErrorCode`, if the set has it, is left
/// out: it is compiled in.
///
/// The tables live as long as the process: load catalogs at start, not per
/// request.
pub fn load_descriptor_set(
    bytes: &[u8],
    file: &str,
) -> Result<Vec<&'static CatalogTable>, CatalogError> {
    let pool = DescriptorPool::decode(bytes).map_err(|e| CatalogError::Descriptors {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    let specs = errmap_spec::read_catalogs(&pool, &[], &[ErrorCode::table().enum_name()]).map_err(
        |problems| CatalogError::Invalid {
            file: file.to_owned(),
            problems: problems.to_string(),
        },
    )?;
    Ok(specs
        .into_iter()
        .map(|spec| {
            let entries: Vec<CatalogEntry> = spec
                .entries
                .iter()
                .map(|e| {
                    CatalogEntry::new(
                        e.number,
                        leak(&e.number.to_string()),
                        leak(&e.name),
                        tonic::Code::from_i32(e.grpc_number),
                        e.http_status,
                        leak(&e.category),
                        leak(&e.message),
                        e.retry_delay.map(|(s, n)| Duration::new(s, n)),
                    )
                    .with_translations(Box::leak(
                        e.translations
                            .iter()
                            .map(|(locale, text)| (leak(locale), leak(text)))
                            .collect::<Vec<_>>()
                            .into_boxed_slice(),
                    ))
                })
                .collect();
            let entries: &'static [CatalogEntry] = Box::leak(entries.into_boxed_slice());
            let table = CatalogTable::new(leak(&spec.domain), leak(&spec.enum_name), entries);
            &*Box::leak(Box::new(table))
        })
        .collect())
}

/// [`load_descriptor_set`] on a file.
pub fn load_file(path: &Path) -> Result<Vec<&'static CatalogTable>, CatalogError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CatalogError::Read {
        file: name.clone(),
        source,
    })?;
    load_descriptor_set(&bytes, &name)
}
