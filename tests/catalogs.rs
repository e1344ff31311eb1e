//! Any team's catalog in the server: descriptor sets made at test time by a
//! stock compiler (protox, as `protoc --include_imports` would), loaded with
//! `errmap serve --catalog`, looked up by domain, code and name, and passed
//! by the response layer.

mod common;

use std::{path::PathBuf, process::Command};

use common::{binary::serve, call_probe, TestServer};
use errmap::{
    catalog_set::{self, Catalogs},
    pb::{get_error_request::Key, GetErrorRequest, ListCatalogsRequest, ListErrorsRequest},
    Catalog as _, ErrorCode, ErrorStatusExt,
};
use errmap_server::server::ServerConfig;
use tonic::{Code, Request};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `file` (under `include`, with errmap's `proto/` for the
/// options) into an encoded descriptor set, imports included.
fn descriptor_set(include: &str, file: &str) -> Vec<u8> {
    let mut compiler = protox::Compiler::new([root().join(include), root().join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file(file).unwrap();
    compiler.encode_file_descriptor_set()
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("errmap-catalogs-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn shop_set() -> PathBuf {
    write_temp(
        "shop.binpb",
        &descriptor_set("examples/shop/proto", "shop/v1/shop.proto"),
    )
}

fn legacy_set() -> PathBuf {
    write_temp(
        "legacy.binpb",
        &descriptor_set("errmap-build/tests/fixtures", "legacy.proto"),
    )
}

#[test]
fn a_server_with_two_extra_catalogs_answers_by_domain_code_and_name() {
    let (shop, legacy) = (shop_set(), legacy_set());
    let mut served = serve(&[
        "--catalog",
        shop.to_str().unwrap(),
        "--catalog",
        legacy.to_str().unwrap(),
    ]);
    let url = served.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = common::catalog_client(url).await.unwrap();
        let get = |key: Key, domain: Option<&str>| GetErrorRequest {
            key: Some(key),
            domain: domain.map(str::to_owned),
        };
        let by_code = client
            .get_error(get(Key::Code(1), Some("shop.example.com")))
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap();
        assert_eq!(by_code.name, "SHOP_ERROR_CARD_DECLINED");
        assert_eq!(by_code.domain, "shop.example.com");
        assert_eq!(by_code.http_status, 402);
        let by_name = client
            .get_error(get(
                Key::Name("LEGACY_NEGATIVE".into()),
                Some("legacy.example.com"),
            ))
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap();
        assert_eq!(by_name.code, Some(-3), "proto2 numbers start anywhere");
        // Without a domain, the default catalog answers.
        let default = client
            .get_error(get(Key::Code(1), None))
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap();
        assert_eq!(default.name, "AUTH_EMAIL_TAKEN");
        // A miss in a domain, and an unknown domain, are 47.
        for (key, domain) in [
            (Key::Code(9), Some("shop.example.com")),
            (Key::Code(1), Some("nowhere.example.com")),
        ] {
            let status = client.get_error(get(key, domain)).await.unwrap_err();
            assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
        }
        let listed = client
            .list_errors(ListErrorsRequest {
                category: "payment".into(),
                domain: Some("shop.example.com".into()),
            })
            .await
            .unwrap()
            .into_inner()
            .errors;
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SHOP_ERROR_CARD_DECLINED",
                "SHOP_ERROR_PAYMENT_PROVIDER_DOWN",
                "SHOP_ERROR_AMOUNT_OVER_LIMIT"
            ]
        );
        let catalogs = client
            .list_catalogs(ListCatalogsRequest {})
            .await
            .unwrap()
            .into_inner()
            .catalogs;
        let summary: Vec<(&str, &str, i32, bool)> = catalogs
            .iter()
            .map(|c| {
                (
                    c.domain.as_str(),
                    c.enum_name.as_str(),
                    c.code_count,
                    c.is_default,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("auth.errmap.dev", "errmap.v1.ErrorCode", 27, true),
                ("shop.example.com", "shop.v1.ShopError", 7, false),
                ("legacy.example.com", "fixture.legacy.LegacyError", 2, false),
            ]
        );
        assert!(catalogs.iter().all(|c| c.content_hash.len() == 16));
        assert_ne!(catalogs[1].content_hash, catalogs[2].content_hash);
    });
    // The CLI asks the server in a domain.
    let url = served.url();
    let value = errmap_json(&[
        "lookup",
        "shop_error_out_of_stock",
        "--server",
        &url,
        "--domain",
        "shop.example.com",
        "--json",
    ]);
    assert_eq!(
        (value["code"].as_i64(), value["domain"].as_str()),
        (Some(2), Some("shop.example.com"))
    );
    // A template's placeholders come from the server too.
    let value = errmap_json(&[
        "lookup",
        "7",
        "--server",
        &url,
        "--domain",
        "shop.example.com",
        "--json",
    ]);
    assert_eq!(value["params"], serde_json::json!(["amount", "limit"]));
    served.stop();
}

#[test]
fn without_the_default_catalog_the_first_loaded_one_is_the_default() {
    let shop = shop_set();
    let mut served = serve(&["--catalog", shop.to_str().unwrap(), "--no-default-catalog"]);
    let url = served.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = common::catalog_client(url).await.unwrap();
        let found = client
            .get_error(GetErrorRequest {
                key: Some(Key::Code(3)),
                domain: None,
            })
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap();
        assert_eq!(found.name, "SHOP_ERROR_CART_NOT_FOUND");
        let status = client
            .get_error(GetErrorRequest {
                key: Some(Key::Code(21)),
                domain: Some(errmap::DOMAIN.into()),
            })
            .await
            .unwrap_err();
        // The server's own failures still carry errmap's codes.
        assert_eq!(status.code(), Code::NotFound);
    });
    served.stop();
}

/// Runs the `errmap` binary, which must succeed, and parses its JSON.
fn errmap_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serve_refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_a_broken_and_a_missing_catalog_file_exit_2_naming_it() {
    let garbage = write_temp("garbage.binpb", b"\xff\xff not a descriptor set");
    let (code, err) = serve_refused(&["--catalog", garbage.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("garbage.binpb") && err.contains("FileDescriptorSet"),
        "{err}"
    );

    let broken = write_temp(
        "broken.binpb",
        &descriptor_set("errmap-build/tests/fixtures", "missing_option.proto"),
    );
    let (code, err) = serve_refused(&["--catalog", broken.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("broken.binpb")
            && err.contains("missing_option.proto: ErrorCode.NAKED_ERROR")
            && err.contains("no (errmap.v1.error) option"),
        "{err}"
    );

    // Issue 25: each bad template of the build's fixture fails the load
    // too, naming the value.
    let templates = write_temp(
        "templates.binpb",
        &descriptor_set("errmap-build/tests/fixtures", "templates.proto"),
    );
    let (code, err) = serve_refused(&["--catalog", templates.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    for (value, words) in [
        (
            "TEMPLATED_OTHER_PLACEHOLDERS",
            "ru-RU message lacks {amount}",
        ),
        (
            "TEMPLATED_BAD_NAME",
            "placeholder {field_name} is not a lowerCamel",
        ),
        (
            "TEMPLATED_UNBALANCED",
            "the brace at byte 7 is never closed",
        ),
        ("TEMPLATED_RESERVED", "placeholder {code} is reserved"),
        ("TEMPLATED_STRAY_CLOSE", "ru-RU message template is broken"),
    ] {
        assert!(
            err.lines().any(
                |l| l.contains(&format!("templates.proto: Templated.{value}: "))
                    && l.contains(words)
            ),
            "{value}: {err}"
        );
    }
    assert!(!err.contains("TEMPLATED_GOOD"), "{err}");

    let (code, err) = serve_refused(&["--catalog", "/nonexistent/shop.binpb"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/shop.binpb"), "{err}");

    // The same domain twice.
    let shop = shop_set();
    let (code, err) = serve_refused(&[
        "--catalog",
        shop.to_str().unwrap(),
        "--catalog",
        shop.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("shop.example.com") && err.contains("already serves"),
        "{err}"
    );
}

#[test]
fn the_cli_reads_a_catalog_file_offline() {
    let shop = shop_set();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_errmap"))
            .args(args)
            .output()
            .unwrap()
    };
    let value = errmap_json(&[
        "lookup",
        "shop_error_card_declined",
        "--catalog",
        shop.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(value["code"], 1);
    assert_eq!(value["domain"], "shop.example.com");
    let out = run(&["list", "--catalog", shop.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    // A header line and the shop's seven codes.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 8);
    let out = run(&["docs", "--catalog", shop.to_str().unwrap()]);
    let docs = String::from_utf8_lossy(&out.stdout);
    assert!(
        docs.contains("- 4 `SHOP_ERROR_PAYMENT_PROVIDER_DOWN`"),
        "{docs}"
    );
    // A template's placeholders, in the docs and in a lookup.
    assert!(
        docs.contains(
            "- 6 `SHOP_ERROR_QUANTITY_OVER_LIMIT`\n  The quantity {quantity} exceeds the limit of {limit} per order.\n  Parameters (each also sent as `ErrorInfo.metadata`): `quantity`, `limit`\n"
        ),
        "{docs}"
    );
    let out = run(&["lookup", "6", "--catalog", shop.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  params:    {quantity}, {limit} (ErrorInfo metadata keys)"),
        "{text}"
    );
    let value = errmap_json(&["lookup", "6", "--catalog", shop.to_str().unwrap(), "--json"]);
    assert_eq!(value["params"], serde_json::json!(["quantity", "limit"]));
    let value = errmap_json(&["lookup", "1", "--catalog", shop.to_str().unwrap(), "--json"]);
    assert!(value.get("params").is_none(), "{value}");
    let out = run(&["lookup", "99", "--catalog", shop.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&[
        "lookup",
        "1",
        "--catalog",
        shop.to_str().unwrap(),
        "--domain",
        "nope.example",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn the_layer_passes_statuses_of_every_loaded_domain_and_rewrites_others() {
    let tables = catalog_set::load_descriptor_set(
        &descriptor_set("examples/shop/proto", "shop/v1/shop.proto"),
        "shop.binpb",
    )
    .unwrap();
    let shop = errmap::TableRef::from(tables.into_iter().next().unwrap());
    let mut config = ServerConfig::default();
    config.catalogs = Catalogs::default()
        .with(shop.clone(), "shop.binpb")
        .unwrap()
        .into();
    let server = TestServer::start(config).await;
    let channel = server.channel().await;

    // A status of the loaded shop catalog passes byte for byte.
    let declined = shop.by_number(1).unwrap();
    let status = shop.status_of(declined);
    *server.probe.next.lock().unwrap() = Some(status.clone());
    let got = call_probe(channel.clone(), "Return", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(got.code(), status.code());
    assert_eq!(got.message(), status.message());
    assert_eq!(got.details(), status.details());
    assert_eq!(
        errmap::details::catalog_entry_of(
            &got,
            &Catalogs::default().with(shop.clone(), "shop").unwrap()
        )
        .unwrap()
        .1
        .name(),
        "SHOP_ERROR_CARD_DECLINED"
    );

    // A catalog the server does not know is rewritten.
    let other = catalog_set::load_descriptor_set(
        &descriptor_set("errmap-build/tests/fixtures", "legacy.proto"),
        "legacy.binpb",
    )
    .unwrap()
    .remove(0);
    let foreign = other.status_of(other.by_number(1000).unwrap());
    *server.probe.next.lock().unwrap() = Some(foreign);
    let got = call_probe(channel, "Return", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(got.error_code(), Some(ErrorCode::ApiItemNotFound));
    assert_eq!(got.code(), Code::NotFound, "the gRPC code is kept");
    assert_eq!(got.message(), ErrorCode::ApiItemNotFound.entry().message());
    server.stop().await;
}
