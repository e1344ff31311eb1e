//! `errmap check NEW --against OLD`, with the binary, on pairs of descriptor
//! sets made from the shop example's proto: one pair for each kind of
//! breaking change and each kind of compatible one, with the exit codes and
//! `--json`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shop_proto() -> String {
    std::fs::read_to_string(root().join("examples/shop/proto/shop/v1/shop.proto")).unwrap()
}

/// `text` as shop/v1/shop.proto, compiled by protox into a descriptor set
/// file named `name`.
fn set_of(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("errmap-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(dir.join("shop/v1")).unwrap();
    std::fs::write(dir.join("shop/v1/shop.proto"), text).unwrap();
    let mut compiler = protox::Compiler::new([dir.clone(), root().join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler
        .open_file("shop/v1/shop.proto")
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    let path = dir.join("set.binpb");
    std::fs::write(&path, compiler.encode_file_descriptor_set()).unwrap();
    path
}

/// Replaces `from` (which must be there) with `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the proto");
    text.replacen(from, to, 1)
}

fn check(new: &Path, old: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_errmap"));
    command.args([
        "check",
        new.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
    ]);
    if json {
        command.arg("--json");
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DECLINED: &str = "SHOP_ERROR_CARD_DECLINED = 1";

#[test]
fn each_breaking_change_is_found_and_exits_1() {
    let base = shop_proto();
    let old = set_of("base", &base);
    let declined_block = |text: &str, from: &str, to: &str| {
        // An edit inside the first code's option block.
        let at = text.find(DECLINED).unwrap();
        let (head, tail) = text.split_at(at);
        format!("{head}{}", edit(tail, from, to))
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "removed",
            edit(
                &base,
                "  // The cart does not exist.\n  SHOP_ERROR_CART_NOT_FOUND = 3 [(errmap.v1.error) = {\n    grpc_code: \"NOT_FOUND\"\n    http_status: 404\n    category: \"cart\"\n    message: \"The cart was not found.\"\n",
                "  SHOP_ERROR_CART_GONE_PLACEHOLDER = 30 [(errmap.v1.error) = {\n    grpc_code: \"NOT_FOUND\"\n    http_status: 404\n    category: \"cart\"\n    message: \"The cart was not found.\"\n",
            ),
            "shop.v1.ShopError.SHOP_ERROR_CART_NOT_FOUND (3): breaking: removed without reserving its number",
            "removed",
        ),
        (
            "renamed",
            edit(&base, DECLINED, "SHOP_ERROR_CARD_REFUSED = 1"),
            "shop.v1.ShopError.SHOP_ERROR_CARD_REFUSED (1): breaking: was named SHOP_ERROR_CARD_DECLINED",
            "renamed",
        ),
        (
            "moved",
            edit(&base, DECLINED, "SHOP_ERROR_CARD_DECLINED = 11"),
            "shop.v1.ShopError.SHOP_ERROR_CARD_DECLINED (11): breaking: the name had number 1",
            "moved",
        ),
        (
            "grpc_code",
            declined_block(&base, "FAILED_PRECONDITION", "INVALID_ARGUMENT"),
            "shop.v1.ShopError.SHOP_ERROR_CARD_DECLINED (1): breaking: gRPC code FAILED_PRECONDITION became INVALID_ARGUMENT",
            "grpc_code",
        ),
        (
            "http_status",
            declined_block(&base, "http_status: 402", "http_status: 400"),
            "shop.v1.ShopError.SHOP_ERROR_CARD_DECLINED (1): breaking: HTTP status 402 became 400",
            "http_status",
        ),
        (
            "domain",
            edit(&base, "\"shop.example.com\"", "\"checkout.example.com\""),
            "shop.v1.ShopError.SHOP_ERROR_CARD_DECLINED (1): breaking: the ErrorInfo domain \"shop.example.com\" became \"checkout.example.com\"",
            "domain",
        ),
        (
            "placeholder_removed",
            base.replace("{limit} per order", "ten per order")
                .replace("лимит в {limit} на заказ", "лимит в десять на заказ")
                .replace("Grenze von {limit} pro", "Grenze von zehn pro"),
            "shop.v1.ShopError.SHOP_ERROR_QUANTITY_OVER_LIMIT (6): breaking: placeholder {limit} removed",
            "placeholder_removed",
        ),
        (
            "placeholder_renamed",
            base.replace("{amount}", "{total}"),
            "shop.v1.ShopError.SHOP_ERROR_AMOUNT_OVER_LIMIT (7): breaking: placeholder {amount} was renamed {total}",
            "placeholder_removed",
        ),
    ];
    for (name, text, line, kind) in cases {
        let new = set_of(name, &text);
        let (code, stdout, stderr) = check(&new, &old, false);
        assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "{name}: no line starting {line:?} in\n{stdout}"
        );
        assert!(stderr.starts_with("breaking: "), "{name}: {stderr}");
        let (code, stdout, _) = check(&new, &old, true);
        assert_eq!(code, Some(1), "{name}");
        let findings: Value = serde_json::from_str(&stdout).unwrap();
        let found = findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind && f["breaking"] == true)
            .unwrap_or_else(|| panic!("{name}: no breaking {kind} in {findings}"));
        for field in ["value", "number", "kind", "breaking", "detail"] {
            assert!(
                !found[field].is_null(),
                "{name}: {field} missing in {found}"
            );
        }
        assert_eq!(found.as_object().unwrap().len(), 5, "{found}");
    }
}

#[test]
fn compatible_changes_are_listed_and_exit_0() {
    let base = shop_proto();
    let old = set_of("base-compatible", &base);
    let new_value = "  SHOP_ERROR_COUPON_EXPIRED = 8 [(errmap.v1.error) = {\n    grpc_code: \"FAILED_PRECONDITION\"\n    http_status: 409\n    category: \"cart\"\n    message: \"The coupon has expired.\"\n    messages: {key: \"de-DE\", value: \"Der Gutschein ist abgelaufen.\"}\n    messages: {key: \"ru-RU\", value: \"Срок действия купона истёк.\"}\n  }];\n}\n\n// Places orders.";
    let with_french = {
        // Every value gains fr-FR: a new translation.
        let mut text = base.clone();
        let mut at = 0;
        while let Some(found) = text[at..].find("    messages: {key: \"ru-RU\"") {
            let start = at + found;
            // The French carries the English message's placeholders.
            let from = text[..start].rfind("message: \"").unwrap();
            let message = text[from..].lines().next().unwrap();
            let placeholders: Vec<&str> = message
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(name, _)| name))
                .collect();
            let french = placeholders
                .iter()
                .map(|p| format!(" {{{p}}}"))
                .collect::<String>();
            let line = format!("    messages: {{key: \"fr-FR\", value: \"Erreur{french}.\"}}\n");
            text.insert_str(start, &line);
            at = start + line.len() + 10;
        }
        text
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "added",
            edit(&base, "}\n\n// Places orders.", new_value),
            "shop.v1.ShopError.SHOP_ERROR_COUPON_EXPIRED (8): compatible: a new value",
            "added",
        ),
        (
            "message",
            edit(&base, "The cart was not found.", "No such cart."),
            "shop.v1.ShopError.SHOP_ERROR_CART_NOT_FOUND (3): compatible: message \"The cart was not found.\" became \"No such cart.\"",
            "message",
        ),
        (
            "translation_added",
            with_french,
            "shop.v1.ShopError.SHOP_ERROR_CARD_DECLINED (1): compatible: new fr-FR message",
            "translation_added",
        ),
        (
            "placeholder_added",
            base.replace(
                "The amount {amount} exceeds the card's limit of {limit}.",
                "The amount {amount} exceeds the card's limit of {limit} by {excess}.",
            )
            .replace("Limit der Karte von {limit}.", "Limit der Karte von {limit} um {excess}.")
            .replace("превышает лимит карты {limit}.", "превышает лимит карты {limit} на {excess}."),
            "shop.v1.ShopError.SHOP_ERROR_AMOUNT_OVER_LIMIT (7): compatible: new placeholder {excess}",
            "placeholder_added",
        ),
        (
            "removed_reserved",
            edit(
                &edit(
                    &base,
                    "  // The cart does not exist.\n  SHOP_ERROR_CART_NOT_FOUND = 3 [(errmap.v1.error) = {\n    grpc_code: \"NOT_FOUND\"\n    http_status: 404\n    category: \"cart\"\n    message: \"The cart was not found.\"\n    messages: {key: \"de-DE\", value: \"Der Warenkorb wurde nicht gefunden.\"}\n    messages: {key: \"ru-RU\", value: \"Корзина не найдена.\"}\n  }];\n",
                    "",
                ),
                "  SHOP_ERROR_UNSPECIFIED = 0;\n",
                "  SHOP_ERROR_UNSPECIFIED = 0;\n  reserved 3;\n  reserved \"SHOP_ERROR_CART_NOT_FOUND\";\n",
            ),
            "shop.v1.ShopError.SHOP_ERROR_CART_NOT_FOUND (3): compatible: removed, and its number is reserved",
            "removed",
        ),
    ];
    for (name, text, line, kind) in cases {
        let new = set_of(name, &text);
        let (code, stdout, stderr) = check(&new, &old, false);
        assert_eq!(code, Some(0), "{name}: {stdout}{stderr}");
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "{name}: no line starting {line:?} in\n{stdout}"
        );
        assert!(stderr.starts_with("compatible: "), "{name}: {stderr}");
        let (code, stdout, _) = check(&new, &old, true);
        assert_eq!(code, Some(0));
        let findings: Value = serde_json::from_str(&stdout).unwrap();
        assert!(
            findings
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == kind && f["breaking"] == false),
            "{name}: {findings}"
        );
    }
    // Nothing changed: no line, exit 0, an empty JSON array.
    let (code, stdout, _) = check(&old, &old, false);
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    let (code, stdout, _) = check(&old, &old, true);
    assert_eq!((code, stdout.trim()), (Some(0), "[]"));
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let old = set_of("base-bad", &shop_proto());
    let garbage = std::env::temp_dir().join(format!("errmap-check-{}-garbage", std::process::id()));
    std::fs::write(&garbage, b"not a descriptor set").unwrap();
    let missing = PathBuf::from("/nonexistent/errmap/new.binpb");
    for (new, words) in [
        (&garbage, "not a valid FileDescriptorSet"),
        (&missing, "/nonexistent/errmap/new.binpb"),
    ] {
        let (code, stdout, stderr) = check(new, &old, false);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.starts_with("error: ") && stderr.contains(words),
            "{stderr}"
        );
    }
    // A broken template in the new set is bad input too, naming the value.
    let broken = set_of(
        "broken-template",
        &shop_proto().replace("{amount} exceeds the card's", "{amount exceeds the card's"),
    );
    let (code, _, stderr) = check(&broken, &old, false);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("ShopError.SHOP_ERROR_AMOUNT_OVER_LIMIT: the message template is broken"),
        "{stderr}"
    );
}

#[test]
fn errmaps_own_catalog_keeps_its_released_clients() {
    // The descriptor set of errmap's protos as built now, against the one
    // of the last release (buf/errmap-v1.binpb).
    let new = std::env::temp_dir().join(format!("errmap-check-{}-own.binpb", std::process::id()));
    std::fs::write(&new, errmap::pb::FILE_DESCRIPTOR_SET).unwrap();
    let released = root().join("buf/errmap-v1.binpb");
    let (code, stdout, stderr) = check(&new, &released, false);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}
