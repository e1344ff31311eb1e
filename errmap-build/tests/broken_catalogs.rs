//! The catalog checks every build runs, fed deliberately broken catalogs:
//! through `spec::read_catalog` directly, and through the builder a team's
//! `build.rs` calls, which must fail naming the value.

use std::path::PathBuf;

use errmap_build::spec::{read_catalog, CatalogErrors, CatalogSpec};

/// The workspace root, where `proto/errmap/v1/options.proto` lives.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles one fixture against the real `proto/errmap/v1/options.proto`.
fn check(fixture: &str) -> Result<CatalogSpec, CatalogErrors> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([
        format!("{root}/tests/fixtures"),
        format!("{}/proto", workspace().display()),
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
    let mut compiler = protox::Compiler::new([format!("{}/proto", workspace().display())]).unwrap();
    compiler.open_file("errmap/v1/error_code.proto").unwrap();
    let spec = read_catalog(&compiler.descriptor_pool(), "errmap.v1.ErrorCode").unwrap();
    assert_eq!(spec.entries.len(), 27);
    // Every code has its Russian message.
    for entry in &spec.entries {
        assert_eq!(entry.translations.len(), 1, "{}", entry.name);
        assert_eq!(entry.translations[0].0, "ru-RU", "{}", entry.name);
    }
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
    let mut compiler = protox::Compiler::new([format!("{}/proto", workspace().display())]).unwrap();
    compiler.open_file("errmap/v1/options.proto").unwrap();
    let err = read_catalog(&compiler.descriptor_pool(), "errmap.v1.ErrorCode").unwrap_err();
    assert!(
        err.to_string()
            .contains("errmap.v1.ErrorCode is not defined"),
        "{err}"
    );
}

/// Runs the builder, as a team's `build.rs` would, on one fixture file.
fn build(fixture: &str) -> Result<errmap_build::Generated, errmap_build::Error> {
    build_files(&[fixture])
}

/// Runs the builder on several fixture files at once.
fn build_files(fixtures: &[&str]) -> Result<errmap_build::Generated, errmap_build::Error> {
    let out = std::env::temp_dir().join(format!(
        "errmap-build-test-{}-{}",
        std::process::id(),
        fixtures.join("-")
    ));
    let files: Vec<String> = fixtures.iter().map(|f| format!("{f}.proto")).collect();
    errmap_build::configure()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(
            &files,
            &[format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))],
        )
}

fn build_problems(fixture: &str) -> String {
    match build(fixture) {
        Ok(generated) => panic!("{fixture} built: {:?}", generated.catalogs),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_builder_fails_naming_the_value_for_every_broken_catalog() {
    for (fixture, value, words) in [
        (
            "missing_option",
            "ErrorCode.NAKED_ERROR",
            "no (errmap.v1.error) option",
        ),
        ("bad_reason", "ErrorCode.lowerCase", "AIP-193"),
        (
            "duplicate_number",
            "ErrorCode.FIRST_ERROR",
            "duplicate number 3",
        ),
        (
            "unknown_grpc_code",
            "ErrorCode.MADE_UP_CODE",
            "unknown gRPC code",
        ),
        ("bad_domain", "BadDomain", "not a lowercase DNS-style name"),
        ("two_domains", "SecondCatalog", "already the domain of"),
        ("proto3_zero", "ZeroError.ZERO_PLACEHOLDER", "AIP-126"),
        (
            "translations",
            "Translated.TRANSLATED_MISSING",
            "no ru-RU message",
        ),
        ("translations", "Translated.TRANSLATED_BAD_TAG", "BCP 47"),
        (
            "translations",
            "Translated.TRANSLATED_EMPTY",
            "ru-RU message is empty",
        ),
    ] {
        let message = build_problems(fixture);
        assert!(
            message.contains(&format!("{fixture}.proto: {value}")) && message.contains(words),
            "{fixture}: {message}"
        );
    }
}

#[test]
fn proto3_unspecified_zero_is_skipped_and_proto2_starts_anywhere() {
    let generated = build_files(&["syntaxes", "legacy"]).unwrap();
    let by_name = |n: &str| {
        generated
            .catalogs
            .iter()
            .find(|c| c.short_name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let three = by_name("ShopError");
    assert_eq!(three.domain, "shop.example.com");
    let numbers: Vec<i32> = three.entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [1, 2], "SHOP_ERROR_UNSPECIFIED = 0 is not a code");
    let two = by_name("LegacyError");
    let numbers: Vec<i32> = two.entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [-3, 1000]);
    // The generated code names the variants without the enum's prefix, and
    // the descriptor set is written.
    let code = std::fs::read_to_string(&generated.rust_file).unwrap();
    assert!(code.contains("pub enum ShopError {"), "{code}");
    assert!(code.contains("    CardDeclined,"), "{code}");
    assert!(
        code.contains("impl ::errmap::Catalog for ShopError"),
        "{code}"
    );
    assert!(
        std::fs::metadata(&generated.descriptor_set_file)
            .unwrap()
            .len()
            > 100
    );
}

#[test]
fn the_shipped_options_proto_is_errmaps() {
    let ours = std::fs::read_to_string(workspace().join("proto/errmap/v1/options.proto")).unwrap();
    assert_eq!(errmap_build::OPTIONS_PROTO, ours);
}

#[test]
fn a_duplicate_name_fails_the_build_naming_it() {
    // protox refuses a name defined twice before the catalog rules run; the
    // builder reports it with the file and the name.
    let message = build_problems("duplicate_name");
    assert!(
        message.contains("duplicate_name.proto") && message.contains("TWICE_ERROR"),
        "{message}"
    );
}

#[test]
fn every_bad_template_fails_the_build_naming_the_value() {
    let mut compiler = protox::Compiler::new([
        format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR")),
        format!("{}/proto", workspace().display()),
    ])
    .unwrap();
    compiler.include_imports(true);
    compiler.open_file("templates.proto").unwrap();
    let problems = read_catalog(&compiler.descriptor_pool(), "fixture.templates.Templated")
        .unwrap_err()
        .0;
    let expected = [
        (
            "TEMPLATED_OTHER_PLACEHOLDERS",
            "ru-RU message lacks {amount} and has {sum} that the English message has not",
        ),
        (
            "TEMPLATED_BAD_NAME",
            "placeholder {field_name} is not a lowerCamel",
        ),
        (
            "TEMPLATED_UNBALANCED",
            "message template is broken: the brace at byte 7 is never closed",
        ),
        ("TEMPLATED_RESERVED", "placeholder {code} is reserved"),
        (
            "TEMPLATED_STRAY_CLOSE",
            "ru-RU message template is broken: the brace at byte",
        ),
    ];
    for (value, words) in expected {
        assert!(
            problems.iter().any(|p| p
                .starts_with(&format!("templates.proto: Templated.{value}: "))
                && p.contains(words)),
            "no problem naming {value} with {words:?} in {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("TEMPLATED_GOOD")),
        "{problems:#?}"
    );
    // And through the builder a team's build.rs calls.
    let message = build_problems("templates");
    for (value, _) in expected {
        assert!(
            message.contains(&format!("templates.proto: Templated.{value}")),
            "{message}"
        );
    }
}
