//! # errmap-build
//!
//! What a team calls from its `build.rs` to turn its own error enum, written
//! in its own proto with errmap's options, into a Rust type that plugs into
//! the `errmap` runtime: `MyError::CardDeclined.into()` gives a
//! `tonic::Status`, `.builder()` works, and
//! `status.error_code::<MyError>()` reads it back.
//!
//! ```proto
//! syntax = "proto3";
//! package shop.v1;
//! import "errmap/v1/options.proto";   // shipped by errmap-build
//!
//! enum ShopError {
//!   option (errmap.v1.domain) = "shop.example.com";
//!   SHOP_ERROR_UNSPECIFIED = 0;       // AIP-126: not an error code
//!   SHOP_ERROR_CARD_DECLINED = 1 [(errmap.v1.error) = {
//!     grpc_code: "FAILED_PRECONDITION" http_status: 402
//!     category: "payment" message: "The card was declined."
//!   }];
//! }
//! ```
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     errmap_build::configure().compile(&["shop/v1/errors.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs
//! include!(concat!(env!("OUT_DIR"), "/errmap_catalogs.rs"));
//! ```
//!
//! Every enum that carries `(errmap.v1.domain)` is checked with the rules of
//! errmap's own catalog (each value has its option; names are AIP-193
//! reasons; gRPC codes exist; HTTP statuses, categories, messages and retry
//! delays are well formed; no number or domain is used twice), and the
//! build fails with every problem, each naming the file, the enum and the
//! value. A proto3 enum's `*_UNSPECIFIED = 0` is not a code and needs no
//! option; a proto2 enum may start anywhere.
//!
//! Besides the Rust code, the builder writes the descriptor set of the
//! compiled files, custom options kept, for server reflection and for
//! `errmap serve --catalog`.
//!
//! The same catalogs become typed helpers for Python, TypeScript and Go
//! through [`plugin`], the work of the `protoc-gen-errmap` protoc plugin.

use std::{
    fmt::{self, Write as _},
    fs, io,
    path::{Path, PathBuf},
};

/// The catalog rules (the `errmap-spec` crate, shared with the runtime).
pub use errmap_spec as spec;

pub use spec::{CatalogErrors, CatalogSpec, EntrySpec};

mod lang;
pub mod plugin;

/// `errmap/v1/options.proto`, the options every catalog imports. The
/// builder puts it on the include path, so a team needs no copy.
pub const OPTIONS_PROTO: &str = include_str!("../proto/errmap/v1/options.proto");

/// Why a build failed. Each variant's message names the file, and for
/// catalog problems the enum and the value.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `OUT_DIR` is not set and no output directory was given.
    NoOutDir,
    /// Reading or writing a file failed.
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The protos do not compile.
    Compile(String),
    /// The protos compile, but a catalog breaks a rule.
    Catalog(CatalogErrors),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoOutDir => f.write_str("OUT_DIR is not set; call out_dir() outside build.rs"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Compile(message) => write!(f, "the protos do not compile: {message}"),
            Error::Catalog(errors) => write!(f, "errmap catalog check failed:\n{errors}"),
        }
    }
}

impl std::error::Error for Error {}

/// Starts a builder with the defaults: output to `OUT_DIR`, the generated
/// code referring to the runtime as `::errmap`.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        runtime: "::errmap".to_owned(),
        file_name: "errmap_catalogs".to_owned(),
        emit_rerun: true,
    }
}

/// Configures and runs the generation; made by [`configure`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `compile` is called"]
pub struct Builder {
    out_dir: Option<PathBuf>,
    runtime: String,
    file_name: String,
    emit_rerun: bool,
}

/// What [`Builder::compile`] generated.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The catalogs found, validated.
    pub catalogs: Vec<CatalogSpec>,
    /// The Rust file to `include!`.
    pub rust_file: PathBuf,
    /// The encoded `FileDescriptorSet`, imports and custom options kept.
    pub descriptor_set_file: PathBuf,
}

impl Builder {
    /// Where to write the output. Default: `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path the generated code uses for the runtime crate. Default
    /// `::errmap`; errmap itself uses `crate`.
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.runtime = path.into();
        self
    }

    /// The base name of the output files: `<name>.rs` and `<name>.bin`.
    /// Default `errmap_catalogs`.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for the include
    /// directories. Default true.
    pub fn emit_rerun_if_changed(mut self, emit: bool) -> Self {
        self.emit_rerun = emit;
        self
    }

    /// Compiles `protos` (paths relative to one of `includes`) with protox,
    /// checks every catalog enum they define, and writes the Rust code and
    /// the descriptor set.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Generated, Error> {
        let out_dir = match self.out_dir.clone() {
            Some(dir) => dir,
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or(Error::NoOutDir)?),
        };
        // The shipped options.proto, last on the include path so that a
        // team's own copy (errmap's, say) wins.
        let shipped = out_dir.join("errmap-build-include");
        let options = shipped.join("errmap/v1/options.proto");
        write(&options, OPTIONS_PROTO.as_bytes())?;
        let mut paths: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_owned()).collect();
        if self.emit_rerun {
            for path in &paths {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        paths.push(shipped);

        let mut compiler =
            protox::Compiler::new(&paths).map_err(|e| Error::Compile(e.to_string()))?;
        compiler.include_imports(true).include_source_info(true);
        let files: Vec<String> = protos
            .iter()
            .map(|p| p.as_ref().to_string_lossy().replace('\\', "/"))
            .collect();
        compiler.open_files(&files).map_err(|e| {
            Error::Compile(match e.file() {
                Some(file) => format!("{file}: {e}"),
                None => e.to_string(),
            })
        })?;
        let pool = compiler.descriptor_pool();
        let catalogs = spec::read_catalogs(&pool, &files, &[]).map_err(Error::Catalog)?;

        let rust_file = out_dir.join(format!("{}.rs", self.file_name));
        let mut code = format!(
            "// Generated by errmap-build from {}. Do not edit.\n",
            files.join(", ")
        );
        for catalog in &catalogs {
            code.push_str(&render(catalog, &self.runtime));
        }
        write(&rust_file, code.as_bytes())?;
        let descriptor_set_file = out_dir.join(format!("{}.bin", self.file_name));
        write(&descriptor_set_file, &compiler.encode_file_descriptor_set())?;
        Ok(Generated {
            catalogs,
            rust_file,
            descriptor_set_file,
        })
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    fs::write(path, bytes).map_err(io)
}

/// `AUTH_USERNAME_TAKEN` to `AuthUsernameTaken`.
pub fn upper_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

/// `ShopError` to `SHOP_ERROR`.
pub(crate) fn screaming_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The Rust variant name of a value: the value's name without the enum's
/// prefix (as prost strips it), in UpperCamelCase.
pub fn variant_name(enum_name: &str, value: &str) -> String {
    upper_camel(lang::short_value_name(enum_name, value))
}

/// The Rust code for one catalog: the enum, its table, and its `Catalog`,
/// `Display` and `From<_> for Status` impls.
pub fn render(catalog: &CatalogSpec, runtime: &str) -> String {
    let name = &catalog.short_name;
    let n = catalog.entries.len();
    let upper = screaming_snake(name);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// The error codes of `{}` (ErrorInfo domain `{}`), from `{}`.\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]\n\
         #[non_exhaustive]\npub enum {name} {{",
        catalog.enum_name, catalog.domain, catalog.file
    );
    for e in &catalog.entries {
        let _ = writeln!(
            s,
            "    /// {} {}: {}\n    {},",
            e.number,
            e.name,
            e.message.replace('`', "'"),
            variant_name(name, &e.name)
        );
    }
    let _ = writeln!(s, "}}");
    let _ = writeln!(
        s,
        "static {upper}_ENTRIES: [{runtime}::CatalogEntry; {n}] = ["
    );
    for e in &catalog.entries {
        let retry = match e.retry_delay {
            Some((secs, nanos)) => format!("Some(::std::time::Duration::new({secs}, {nanos}))"),
            None => "None".to_owned(),
        };
        let translations = if e.translations.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = e
                .translations
                .iter()
                .map(|(locale, text)| {
                    format!("({locale:?}, ::std::borrow::Cow::Borrowed({text:?}))")
                })
                .collect();
            format!(".with_translations(&[{}])", pairs.join(", "))
        };
        let params = if e.params.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = e
                .params
                .iter()
                .map(|p| format!("::std::borrow::Cow::Borrowed({p:?})"))
                .collect();
            format!(".with_params(&[{}])", names.join(", "))
        };
        let _ = writeln!(
            s,
            "    {runtime}::CatalogEntry::new({num}, \"{num}\", {reason:?}, ::tonic::Code::{grpc}, {http}, {cat:?}, {msg:?}, {retry}){translations}{params},",
            num = e.number,
            reason = e.name,
            grpc = upper_camel(e.grpc_code),
            http = e.http_status,
            cat = e.category,
            msg = e.message,
        );
    }
    let _ = writeln!(s, "];");
    // A dense by-number table, so that `from_code` on a compiled catalog is
    // an index into a static array.
    let (min, max) = (
        catalog.entries.first().map_or(0, |e| e.number),
        catalog.entries.last().map_or(0, |e| e.number),
    );
    let dense = i64::from(max) - i64::from(min) < 4096 && n > 0;
    if dense {
        let mut slots = vec![u16::MAX; (max - min) as usize + 1];
        for (i, e) in catalog.entries.iter().enumerate() {
            slots[(e.number - min) as usize] = i as u16;
        }
        let _ = writeln!(
            s,
            "static {upper}_BY_NUMBER: [u16; {}] = {slots:?};",
            slots.len()
        );
    }
    let _ = writeln!(s, "const {upper}_ALL: [{name}; {n}] = [");
    for e in &catalog.entries {
        let _ = writeln!(s, "    {name}::{},", variant_name(name, &e.name));
    }
    let _ = writeln!(s, "];");
    let _ = write!(
        s,
        "impl {runtime}::Catalog for {name} {{
    fn table() -> &'static {runtime}::CatalogTable {{
        static TABLE: ::std::sync::OnceLock<{runtime}::CatalogTable> = ::std::sync::OnceLock::new();
        TABLE.get_or_init(|| {{
            {runtime}::CatalogTable::new({domain:?}, {full:?}, &{upper}_ENTRIES[..])
        }})
    }}
    #[inline]
    fn index(self) -> usize {{
        self as usize
    }}
    #[inline]
    fn from_index(index: usize) -> ::core::option::Option<Self> {{
        {upper}_ALL.get(index).copied()
    }}
{from_code}}}
impl ::core::fmt::Display for {name} {{
    /// Writes the name, the ErrorInfo reason.
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{
        f.write_str({runtime}::Catalog::entry(*self).name())
    }}
}}
impl ::core::convert::From<{name}> for ::tonic::Status {{
    fn from(code: {name}) -> Self {{
        {runtime}::Catalog::to_status(code)
    }}
}}
",
        domain = catalog.domain,
        full = catalog.enum_name,
        from_code = if dense {
            let offset = if min == 0 {
                "usize::try_from(code).ok()?".to_owned()
            } else {
                format!("usize::try_from(i64::from(code) - ({min}i64)).ok()?")
            };
            format!(
                "    #[inline]
    fn from_code(code: i32) -> ::core::option::Option<Self> {{
        let at = {offset};
        match *{upper}_BY_NUMBER.get(at)? {{
            u16::MAX => None,
            i => Self::from_index(usize::from(i)),
        }}
    }}
"
            )
        } else {
            String::new()
        },
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_lose_the_enum_prefix_as_prost_does() {
        assert_eq!(
            variant_name("ShopError", "SHOP_ERROR_CARD_DECLINED"),
            "CardDeclined"
        );
        assert_eq!(variant_name("ErrorCode", "AUTH_REQUIRED"), "AuthRequired");
        // A prefix that would leave a leading digit is kept.
        assert_eq!(variant_name("Shop", "SHOP_404"), "Shop404");
    }
}
