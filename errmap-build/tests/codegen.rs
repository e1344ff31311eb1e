//! `protoc-gen-errmap`'s library: golden files for the three languages of
//! one small catalog, and the plugin's errors, through the same bytes protoc
//! and buf exchange with it. `UPDATE_GOLDEN=1 cargo test -p errmap-build
//! --test codegen` rewrites the golden files.

use std::path::PathBuf;

use errmap_build::plugin;
use prost::Message as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The encoded descriptor set of `fixture` and its imports, options kept.
fn descriptor_set(fixture: &str) -> Vec<u8> {
    let mut compiler =
        protox::Compiler::new([root().join("tests/fixtures"), root().join("../proto")]).unwrap();
    compiler.include_imports(true);
    compiler
        .open_file(fixture)
        .unwrap_or_else(|e| panic!("{fixture} does not compile: {e}"));
    compiler.encode_file_descriptor_set()
}

/// A `CodeGeneratorRequest` as protoc sends it: the files to generate, the
/// parameter, and every file (imports first) as `proto_file` (field 15),
/// taken byte for byte from the descriptor set's field 1.
fn request(set: &[u8], files: &[&str], parameter: Option<&str>) -> Vec<u8> {
    use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
    let mut out = Vec::new();
    for file in files {
        prost::encoding::string::encode(1, &file.to_string(), &mut out);
    }
    if let Some(p) = parameter {
        prost::encoding::string::encode(2, &p.to_string(), &mut out);
    }
    let mut rest = set;
    while !rest.is_empty() {
        let (tag, wire) = decode_key(&mut rest).unwrap();
        assert_eq!((tag, wire), (1, WireType::LengthDelimited));
        let len = decode_varint(&mut rest).unwrap() as usize;
        encode_key(15, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        out.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// `CodeGeneratorResponse`, read back.
#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(string, optional, tag = "1")]
    error: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    supported_features: Option<u64>,
    #[prost(message, repeated, tag = "15")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct File {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "15")]
    content: Option<String>,
}

fn run(set: &[u8], files: &[&str], parameter: Option<&str>) -> Response {
    Response::decode(plugin::run(&request(set, files, parameter)).as_slice()).unwrap()
}

#[test]
fn golden_files_of_one_small_catalog() {
    let set = descriptor_set("codegen.proto");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (lang, golden, name) in [
        ("python", "codegen_errmap.py", "codegen_errmap.py"),
        ("ts", "codegen_errmap.ts", "codegen_errmap.ts"),
        (
            "go",
            "codegen_errmap.go",
            "example.com/fixture/codegen/codegen_errmap.go",
        ),
    ] {
        let response = run(&set, &["codegen.proto"], Some(&format!("lang={lang}")));
        assert_eq!(response.error, None, "{lang}");
        assert_eq!(response.supported_features, Some(1), "proto3 optional");
        assert_eq!(response.file.len(), 1, "{lang}: one file");
        let file = &response.file[0];
        assert_eq!(file.name.as_deref(), Some(name), "{lang}");
        let content = file.content.clone().unwrap();
        let path = root().join("tests/golden/codegen").join(golden);
        if update {
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale golden files (UPDATE_GOLDEN=1 rewrites them, then review the diff): {stale:?}"
    );
}

#[test]
fn the_golden_files_say_what_the_catalog_says() {
    // Spot checks, so that a golden file rewritten wrong does not pass.
    let py =
        std::fs::read_to_string(root().join("tests/golden/codegen/codegen_errmap.py")).unwrap();
    assert!(py.contains("def is_card_declined(err: object) -> bool:"));
    assert!(py.contains(
        "def amount_over_limit(locale: str = \"en-US\", *, amount: object, limit: object) -> grpc.Status:"
    ));
    assert!(py.contains("retry_delay=(2, 500000000, 2500)"));
    assert!(py.contains(r#""en-US": "The card was declined; try \"another\" card.","#));
    assert!(py.contains(r#""en-US": "The provider is down\\unavailable; retry.","#));
    let ts =
        std::fs::read_to_string(root().join("tests/golden/codegen/codegen_errmap.ts")).unwrap();
    assert!(ts.contains("export function isAmountOverLimit(err: unknown): boolean {"));
    assert!(ts.contains(
        "export function amountOverLimit(\n  params: { \"amount\": Param; \"limit\": Param },"
    ));
    assert!(ts.contains("grpcCode: Code.FailedPrecondition,"));
    assert!(ts.contains("} from \"./google/rpc/error_details_pb\";"));
    let go =
        std::fs::read_to_string(root().join("tests/golden/codegen/codegen_errmap.go")).unwrap();
    assert!(
        go.starts_with("// Code generated by protoc-gen-errmap from codegen.proto. DO NOT EDIT.\n")
    );
    assert!(go.contains("\npackage codegen\n"));
    assert!(go.contains("func IsProviderDown(err error) bool {"));
    assert!(go.contains("func ErrorAmountOverLimit(params map[string]string) error {"));
    assert!(go.contains("retryDelay: 2*time.Second + 500000000*time.Nanosecond,"));
}

#[test]
fn options_shape_the_paths() {
    let set = descriptor_set("codegen.proto");
    let go = run(
        &set,
        &["codegen.proto"],
        Some("lang=go,paths=source_relative"),
    );
    assert_eq!(go.file[0].name.as_deref(), Some("codegen_errmap.go"));
    let ts = run(
        &set,
        &["codegen.proto"],
        Some("lang=ts,import_extension=js"),
    );
    assert!(ts.file[0]
        .content
        .as_deref()
        .unwrap()
        .contains("} from \"./google/rpc/error_details_pb.js\";"));
    // A file with no catalog gives no file, and no error.
    let none = run(&set, &["errmap/v1/options.proto"], Some("lang=python"));
    assert_eq!((none.error, none.file.len()), (None, 0));
}

fn one_line_error(response: Response) -> String {
    assert!(response.file.is_empty(), "files written beside an error");
    let error = response.error.expect("an error");
    assert!(!error.contains('\n'), "more than one line: {error}");
    error
}

#[test]
fn a_bad_catalog_is_one_line_naming_the_values() {
    let set = descriptor_set("bad_reason.proto");
    let error = one_line_error(run(&set, &["bad_reason.proto"], Some("lang=python")));
    assert!(
        error.starts_with("protoc-gen-errmap: bad_reason.proto: "),
        "{error}"
    );
    assert!(
        error.contains("TRAILING_UNDERSCORE_") && error.contains("lowerCase"),
        "{error}"
    );
}

#[test]
fn an_unknown_lang_no_lang_and_bad_parameters_are_one_line_each() {
    let set = descriptor_set("codegen.proto");
    let cases = [
        (Some("lang=cobol"), "protoc-gen-errmap: unknown lang \"cobol\"; use python, ts or go"),
        (None, "protoc-gen-errmap: no lang given; pass lang=python, lang=ts or lang=go as the plugin parameter"),
        (Some("paths=source_relative"), "protoc-gen-errmap: no lang given;"),
        (Some("lang=go,paths=nowhere"), "protoc-gen-errmap: unknown paths \"nowhere\""),
        (Some("lang=ts,color=blue"), "protoc-gen-errmap: unknown parameter \"color\""),
        (Some("lang"), "protoc-gen-errmap: parameter \"lang\" is not key=value"),
    ];
    for (parameter, cause) in cases {
        let error = one_line_error(run(&set, &["codegen.proto"], parameter));
        assert!(error.starts_with(cause), "{parameter:?}: {error}");
    }
}

#[test]
fn a_go_file_needs_a_go_package() {
    // valid.proto sets no go_package.
    let set = descriptor_set("valid.proto");
    let error = one_line_error(run(&set, &["valid.proto"], Some("lang=go")));
    assert!(
        error.contains("valid.proto: no go_package option"),
        "{error}"
    );
    // Python needs none.
    assert_eq!(run(&set, &["valid.proto"], Some("lang=python")).error, None);
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    for bytes in [&b"\xff\xff\xff"[..], b"\x7a\x05abc", b"\x0a\x02\xc3\x28"] {
        let response = Response::decode(plugin::run(bytes).as_slice()).unwrap();
        assert!(response.error.unwrap().starts_with("protoc-gen-errmap: "));
    }
    // A parameter-only request has no files: nothing to do, no error.
    let empty = run(&[], &[], Some("lang=go"));
    assert_eq!((empty.error, empty.file.len()), (None, 0));
}

#[test]
fn generated_names_that_clash_are_refused() {
    let dir = std::env::temp_dir().join(format!("errmap-codegen-clash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("clash.proto"),
        r#"syntax = "proto3";
package fixture.clash;
import "errmap/v1/options.proto";
enum ClashError {
  option (errmap.v1.domain) = "clash.example.com";
  CLASH_ERROR_UNSPECIFIED = 0;
  CLASH_ERROR_GONE = 1 [(errmap.v1.error) = {grpc_code: "NOT_FOUND" http_status: 404 category: "misc" message: "Gone."}];
  GONE = 2 [(errmap.v1.error) = {grpc_code: "NOT_FOUND" http_status: 404 category: "misc" message: "Gone too."}];
  CLASH_ERROR_ENTRY_OF = 3 [(errmap.v1.error) = {grpc_code: "NOT_FOUND" http_status: 404 category: "misc" message: "Entry."}];
}
"#,
    )
    .unwrap();
    let mut compiler = protox::Compiler::new([dir.clone(), root().join("../proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("clash.proto").unwrap();
    let set = compiler.encode_file_descriptor_set();
    let error = one_line_error(run(&set, &["clash.proto"], Some("lang=python")));
    assert!(
        error.contains("CLASH_ERROR_GONE and GONE both give the helper name"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
