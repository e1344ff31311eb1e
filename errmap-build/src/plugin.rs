//! `protoc-gen-errmap`: a protoc plugin that generates typed error helpers
//! for Python, TypeScript and Go from a catalog enum.
//!
//! A plugin is a function from bytes to files: protoc (or `buf generate`)
//! writes a `CodeGeneratorRequest` to the plugin's stdin and reads a
//! `CodeGeneratorResponse` from its stdout. [`run`] is that function; the
//! `protoc-gen-errmap` binary only moves the bytes.
//!
//! The request's files are decoded into a `prost_reflect::DescriptorPool`
//! from their raw bytes, so the `(errmap.v1.domain)` and `(errmap.v1.error)`
//! options survive (`prost-types` would drop them), and each catalog is
//! checked with the same rules as [`crate::configure`]'s build.
//!
//! The parameter (`--errmap_out=lang=python:OUT`, or `opt: lang=python` in
//! a `buf.gen.yaml`) is a comma-separated list of `key=value`:
//!
//! | key | values | |
//! |---|---|---|
//! | `lang` | `python`, `ts`, `go` | required |
//! | `import_extension` | `none`, `js`, `ts` | TypeScript: the extension of relative imports, as protoc-gen-es takes it (default `none`) |
//! | `paths` | `import`, `source_relative` | Go: where the file goes, as protoc-gen-go takes it (default `import`) |
//!
//! ```
//! # use errmap_build::plugin::{generate, Lang, Options};
//! let options = Options::parse(Some("lang=python")).unwrap();
//! assert_eq!(options.lang, Lang::Python);
//! assert!(Options::parse(Some("lang=cobol")).is_err());
//! assert!(Options::parse(None).is_err());
//! ```

use std::fmt;

use prost::Message as _;
use prost_reflect::DescriptorPool;

pub use crate::lang::{GeneratedFile, GoPaths, ImportExtension};
use crate::{lang, spec};

/// The language to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `<stem>_errmap.py`, beside protoc's `<stem>_pb2.py`.
    Python,
    /// `<stem>_errmap.ts`, beside protoc-gen-es's `<stem>_pb.ts`.
    TypeScript,
    /// `<stem>_errmap.go`, in the file's `go_package`.
    Go,
}

/// The plugin's parameter, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `lang=`, required.
    pub lang: Lang,
    /// `import_extension=`, for TypeScript.
    pub import_extension: ImportExtension,
    /// `paths=`, for Go.
    pub go_paths: GoPaths,
}

/// Why the plugin generated nothing. Its message is one line, naming the
/// cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The parameter has no `lang=`.
    NoLang,
    /// The parameter is wrong: an unknown key or value.
    BadParameter(String),
    /// The request is not a `CodeGeneratorRequest`, or its files do not
    /// form a descriptor pool.
    BadRequest(String),
    /// A catalog breaks a rule; each problem names the value.
    Catalog(Vec<String>),
    /// The catalog is valid but cannot be written in the language (a name
    /// that clashes, a Go file with no `go_package`).
    Unrepresentable(String),
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::NoLang => f.write_str(
                "protoc-gen-errmap: no lang given; pass lang=python, lang=ts or lang=go as the plugin parameter",
            ),
            PluginError::BadParameter(why) => write!(f, "protoc-gen-errmap: {why}"),
            PluginError::BadRequest(why) => {
                write!(f, "protoc-gen-errmap: not a CodeGeneratorRequest: {why}")
            }
            PluginError::Catalog(problems) => {
                write!(f, "protoc-gen-errmap: {}", problems.join("; "))
            }
            PluginError::Unrepresentable(why) => write!(f, "protoc-gen-errmap: {why}"),
        }
    }
}

impl std::error::Error for PluginError {}

impl Options {
    /// Parses the plugin parameter: `lang=python`, `lang=ts,import_extension=js`,
    /// `lang=go,paths=source_relative`.
    pub fn parse(parameter: Option<&str>) -> Result<Options, PluginError> {
        let mut lang = None;
        let mut import_extension = ImportExtension::None;
        let mut go_paths = GoPaths::Import;
        for item in parameter
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((key, value)) = item.split_once('=') else {
                return Err(PluginError::BadParameter(format!(
                    "parameter {item:?} is not key=value"
                )));
            };
            match key.trim() {
                "lang" => {
                    lang = Some(match value.trim() {
                        "python" | "py" => Lang::Python,
                        "ts" | "typescript" => Lang::TypeScript,
                        "go" => Lang::Go,
                        other => {
                            return Err(PluginError::BadParameter(format!(
                                "unknown lang {other:?}; use python, ts or go"
                            )))
                        }
                    })
                }
                "import_extension" => {
                    import_extension = match value.trim() {
                        "none" | "" => ImportExtension::None,
                        "js" | ".js" => ImportExtension::Js,
                        "ts" | ".ts" => ImportExtension::Ts,
                        other => {
                            return Err(PluginError::BadParameter(format!(
                                "unknown import_extension {other:?}; use none, js or ts"
                            )))
                        }
                    }
                }
                "paths" => {
                    go_paths = match value.trim() {
                        "import" => GoPaths::Import,
                        "source_relative" => GoPaths::SourceRelative,
                        other => {
                            return Err(PluginError::BadParameter(format!(
                                "unknown paths {other:?}; use import or source_relative"
                            )))
                        }
                    }
                }
                other => {
                    return Err(PluginError::BadParameter(format!(
                        "unknown parameter {other:?}; the keys are lang, import_extension and paths"
                    )))
                }
            }
        }
        Ok(Options {
            lang: lang.ok_or(PluginError::NoLang)?,
            import_extension,
            go_paths,
        })
    }
}

/// `google.protobuf.compiler.CodeGeneratorRequest`, with the files kept as
/// bytes so that no option is lost before the pool reads them.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRequest {
    #[prost(string, repeated, tag = "1")]
    file_to_generate: Vec<String>,
    #[prost(string, optional, tag = "2")]
    parameter: Option<String>,
    #[prost(bytes = "vec", repeated, tag = "15")]
    proto_file: Vec<Vec<u8>>,
}

/// `google.protobuf.compiler.CodeGeneratorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawResponse {
    #[prost(string, optional, tag = "1")]
    error: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    supported_features: Option<u64>,
    #[prost(message, repeated, tag = "15")]
    file: Vec<RawFile>,
}

/// `CodeGeneratorResponse.File`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFile {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "15")]
    content: Option<String>,
}

/// `FEATURE_PROTO3_OPTIONAL`: the plugin reads no field, so proto3
/// `optional` changes nothing for it.
const FEATURE_PROTO3_OPTIONAL: u64 = 1;

/// The plugin: an encoded `CodeGeneratorRequest` in, an encoded
/// `CodeGeneratorResponse` out. A failure is the response's `error`, which
/// protoc and buf print and exit non-zero on; it never panics on bad input.
pub fn run(request: &[u8]) -> Vec<u8> {
    let response = match generate(request) {
        Ok(files) => RawResponse {
            error: None,
            supported_features: Some(FEATURE_PROTO3_OPTIONAL),
            file: files
                .into_iter()
                .map(|f| RawFile {
                    name: Some(f.name),
                    content: Some(f.content),
                })
                .collect(),
        },
        Err(e) => RawResponse {
            error: Some(e.to_string()),
            supported_features: Some(FEATURE_PROTO3_OPTIONAL),
            file: Vec::new(),
        },
    };
    response.encode_to_vec()
}

/// The files for an encoded `CodeGeneratorRequest`: one per file to
/// generate that defines at least one catalog enum, none for the others.
pub fn generate(request: &[u8]) -> Result<Vec<GeneratedFile>, PluginError> {
    let request =
        RawRequest::decode(request).map_err(|e| PluginError::BadRequest(e.to_string()))?;
    let options = Options::parse(request.parameter.as_deref())?;
    // The files, in the order protoc gives them (every file after its
    // imports), as one FileDescriptorSet.
    let mut set = Vec::with_capacity(request.proto_file.iter().map(|f| f.len() + 6).sum());
    for file in &request.proto_file {
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    let pool = DescriptorPool::decode(set.as_slice())
        .map_err(|e| PluginError::BadRequest(e.to_string()))?;
    generate_from_pool(&pool, &request.file_to_generate, &options)
}

/// The files for `files_to_generate` of `pool`, in the language of
/// `options`. For callers that hold a pool already (tests, a build script).
pub fn generate_from_pool(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    options: &Options,
) -> Result<Vec<GeneratedFile>, PluginError> {
    let catalogs = spec::find_catalogs(pool, files_to_generate, &[])
        .map_err(|errors| PluginError::Catalog(errors.0))?;
    let mut out = Vec::new();
    for file in files_to_generate {
        let in_file: Vec<&spec::CatalogSpec> =
            catalogs.iter().filter(|c| &c.file == file).collect();
        if in_file.is_empty() {
            continue;
        }
        let Some(descriptor) = pool.get_file_by_name(file) else {
            continue;
        };
        let source = lang::Source {
            file,
            go_package: descriptor
                .file_descriptor_proto()
                .options
                .as_ref()
                .and_then(|o| o.go_package.clone()),
            catalogs: &in_file,
        };
        let file = match options.lang {
            Lang::Python => lang::python::render(&source),
            Lang::TypeScript => lang::typescript::render(&source, options.import_extension),
            Lang::Go => lang::go::render(&source, options.go_paths),
        };
        out.push(file.map_err(PluginError::Unrepresentable)?);
    }
    if options.lang == Lang::Go {
        lang::check_go_packages(&out).map_err(PluginError::Unrepresentable)?;
    }
    Ok(out)
}
