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

use std::{path::Path, sync::Arc};

use prost_reflect::DescriptorPool;

use crate::{
    catalog::{CatalogEntry, CatalogTable, TableRef},
    code::Catalog,
    ErrorCode,
};

/// A set of catalogs with distinct domains; cheap to clone. A value never
/// changes: a server that reloads its catalogs swaps in a new set, and a
/// table loaded at run time is freed with the last set that holds it.
#[derive(Debug, Clone)]
pub struct Catalogs {
    tables: Arc<[TableRef]>,
    default: Option<usize>,
}

impl Default for Catalogs {
    /// The auth API's catalog, [`ErrorCode`], alone and as the default.
    fn default() -> Self {
        Self {
            tables: Arc::from([TableRef::from(ErrorCode::table())]),
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
    pub fn with(&self, table: impl Into<TableRef>, source: &str) -> Result<Self, CatalogError> {
        let table = table.into();
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
    pub fn tables(&self) -> impl Iterator<Item = &TableRef> + '_ {
        let default = self.default.map(|i| &self.tables[i]);
        default.into_iter().chain(
            self.tables
                .iter()
                .enumerate()
                .filter(move |(i, _)| Some(*i) != self.default)
                .map(|(_, t)| t),
        )
    }

    /// The catalog lookups without a domain use.
    pub fn default_table(&self) -> Option<&TableRef> {
        self.default.map(|i| &self.tables[i])
    }

    /// The catalog of `domain`.
    #[inline]
    pub fn by_domain(&self, domain: &str) -> Option<&TableRef> {
        self.tables.iter().find(|t| t.domain() == domain)
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

/// Reads every catalog enum of an encoded `FileDescriptorSet` (`file` names
/// it in errors), under the rules `errmap-build` checks, and makes a table
/// of each. errmap's own `errmap.v1.ErrorCode`, if the set has it, is left
/// out: it is compiled in.
///
/// The tables own their data: a table is freed when the last
/// [`Catalogs`] set and status builder holding it are dropped.
pub fn load_descriptor_set(bytes: &[u8], file: &str) -> Result<Vec<CatalogTable>, CatalogError> {
    let specs = read_specs(bytes, file, false)?;
    Ok(tables_of(&specs, bytes))
}

/// The catalogs of an encoded `FileDescriptorSet` (`file` names it in
/// errors), checked under the rules `errmap-build` applies, as their
/// specs: what [`errmap_spec::compat::compare`] compares. errmap's own
/// `errmap.v1.ErrorCode` is among them only when `with_errmaps_own` is set.
pub fn read_specs(
    bytes: &[u8],
    file: &str,
    with_errmaps_own: bool,
) -> Result<Vec<errmap_spec::CatalogSpec>, CatalogError> {
    let pool = DescriptorPool::decode(bytes).map_err(|e| CatalogError::Descriptors {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    let own = ErrorCode::table().enum_name();
    let skip: &[&str] = if with_errmaps_own { &[] } else { &[own] };
    errmap_spec::read_catalogs(&pool, &[], skip).map_err(|problems| CatalogError::Invalid {
        file: file.to_owned(),
        problems: problems.to_string(),
    })
}

/// A table of each of `specs`, read from the encoded `FileDescriptorSet`
/// `set` (which reflection serves).
pub fn tables_of(specs: &[errmap_spec::CatalogSpec], set: &[u8]) -> Vec<CatalogTable> {
    let set = bytes::Bytes::copy_from_slice(set);
    specs
        .iter()
        .map(|spec| {
            let entries: Vec<CatalogEntry> = spec.entries.iter().map(CatalogEntry::owned).collect();
            CatalogTable::new(spec.domain.clone(), spec.enum_name.clone(), entries)
                .with_descriptor_set(set.clone())
        })
        .collect()
}

/// [`load_descriptor_set`] on a file.
pub fn load_file(path: &Path) -> Result<Vec<CatalogTable>, CatalogError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CatalogError::Read {
        file: name.clone(),
        source,
    })?;
    load_descriptor_set(&bytes, &name)
}
