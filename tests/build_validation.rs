//! The catalog checks `build.rs` runs, fed deliberately broken catalogs.
//!
//! `build/catalog_spec.rs` is included here through `#[path]`: these tests
//! exercise the very function the build calls, not a copy of it.

#[path = "../build/catalog_spec.rs"]
#[allow(dead_code, unreachable_pub)]
mod catalog_spec;

use catalog_spec::{read_catalog, CatalogErrors, CatalogSpec};

/// Compiles one fixture against the real `proto/errmap/v1/options.proto`.
fn check(fixture: &str) -> Result<CatalogSpec, CatalogErrors> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([
        format!("{root}/tests/fixtures/catalogs"),
        format!("{root}/proto"),
    ])
    .unwrap();
    compiler.include_imports(true);
    compiler
        .open_file(format!("{fixture}.proto"))
        .unwrap_or_else(|e| panic!("fixture {fixture} does not compile: {e}"));
    read_catalog(
        &compiler.descriptor_pool(),
        &format!("fixture.{fixture}.ErrorCode"),
    )
}

fn problems(fixture: &str) -> Vec<String> {
    match check(fixture) {
        Ok(spec) => panic!("{fixture} was accepted: {spec:?}"),
        Err(errors) => errors.0,
    }
}

fn assert_reported(problems: &[String], value: &str, words: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("ErrorCode.{value}:")) && p.contains(words)),
        "no problem naming {value} with {words:?} in {problems:#?}"
    );
}

#[test]
fn a_valid_catalog_is_read_whole() {
    let spec = check("valid").unwrap();
    assert_eq!(spec.domain, "fixture.example");
    assert_eq!(spec.entries.len(), 2);
    let second = &spec.entries[1];
    assert_eq!(second.number, 7);
    assert_eq!(second.name, "SECOND_ERROR");
    assert_eq!((second.grpc_code, second.grpc_number), ("UNAVAILABLE", 14));
    assert_eq!(second.http_status, 503);
    assert_eq!(second.message, "Try again?");
    assert_eq!(second.retry_delay, Some((2, 500_000_000)));
    assert_eq!(spec.entries[0].retry_delay, None);
}

#[test]
fn the_real_catalog_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([format!("{root}/proto")]).unwrap();
    compiler.open_file("errmap/v1/error_code.proto").unwrap();
    let spec = read_catalog(&compiler.descriptor_pool(), "errmap.v1.ErrorCode").unwrap();
    assert_eq!(spec.entries.len(), 27);
}

#[test]
fn a_value_without_its_option_is_named() {
    let p = problems("missing_option");
    assert_reported(&p, "NAKED_ERROR", "no (errmap.v1.error) option");
    assert_eq!(p.len(), 1, "{p:#?}");
}

#[test]
fn bad_reasons_are_named() {
    let p = problems("bad_reason");
    assert_reported(&p, "TRAILING_UNDERSCORE_", "AIP-193");
    assert_reported(&p, "lowerCase", "AIP-193");
}

#[test]
fn a_duplicate_number_is_named() {
    let p = problems("duplicate_number");
    // Both names appear: one as the value, the other as its first owner.
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("duplicate number 3"), "{p:#?}");
    assert!(
        p[0].contains("FIRST_ERROR") && p[0].contains("ALIAS_ERROR"),
        "{p:#?}"
    );
}

#[test]
fn unknown_grpc_codes_are_named() {
    let p = problems("unknown_grpc_code");
    assert_reported(&p, "MADE_UP_CODE", "unknown gRPC code \"TEAPOT\"");
    assert_reported(&p, "NOT_AN_ERROR", "OK is not an error");
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let p = problems("bad_fields");
    assert_reported(&p, "BAD_HTTP", "HTTP status 700");
    assert_reported(&p, "EMPTY_MESSAGE", "message is empty");
    assert_reported(&p, "BAD_CATEGORY", "snake_case");
    assert_reported(&p, "ZERO_DELAY", "retry_delay must be positive");
    assert_reported(&p, "NO_FULL_STOP", "full stop");
    assert!(
        p.iter().any(|m| m.contains("(errmap.v1.domain)")),
        "missing domain not reported: {p:#?}"
    );
    assert!(
        p.iter()
            .all(|m| m.starts_with("bad_fields.proto: ErrorCode")),
        "{p:#?}"
    );
}

#[test]
fn a_missing_enum_is_reported() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([format!("{root}/proto")]).unwrap();
    compiler.open_file("errmap/v1/options.proto").unwrap();
    let err = read_catalog(&compiler.descriptor_pool(), "errmap.v1.ErrorCode").unwrap_err();
    assert!(
        err.to_string()
            .contains("errmap.v1.ErrorCode is not defined"),
        "{err}"
    );
}
