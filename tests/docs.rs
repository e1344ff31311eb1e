//! `docs/errors.md` is the output of `errmap docs`, and stays so.

use std::process::Command;

use errmap::Catalog as _;

#[test]
fn docs_errors_md_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md");
    let committed = std::fs::read_to_string(path).expect("docs/errors.md exists");
    let output = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .arg("docs")
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert_eq!(generated, errmap::ErrorCode::table().markdown());
    assert!(
        committed == generated,
        "docs/errors.md is out of date: run `cargo run -- docs > docs/errors.md`"
    );
}

#[test]
fn docs_list_every_code_in_the_original_shape() {
    let markdown = errmap::ErrorCode::table().markdown();
    for entry in errmap::ErrorCode::table().entries() {
        // Names as code, not as brackets that look like a link (issue 22).
        let line = format!(
            "- {} `{}`\n  {}\n",
            entry.number(),
            entry.name(),
            entry.message()
        );
        assert!(markdown.contains(&line), "{line:?} missing");
        assert!(markdown.contains(&format!("## Category `{}`\n", entry.category())));
        assert!(!markdown.contains(&format!("[{}]", entry.name())));
    }
    assert!(markdown
        .contains("| 44 | `API_TOO_MANY_REQUESTS` | api | RESOURCE_EXHAUSTED | 429 | 1 s |"));
}

#[test]
fn docs_errors_ru_md_is_up_to_date_and_in_russian() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.ru.md");
    let committed = std::fs::read_to_string(path).expect("docs/errors.ru.md exists");
    let output = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["docs", "--lang", "ru"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        committed == generated,
        "docs/errors.ru.md is out of date: run `cargo run -- docs --lang ru > docs/errors.ru.md`"
    );
    for entry in errmap::ErrorCode::table().entries() {
        let russian = entry.message_in("ru-RU").expect("every code has ru-RU");
        assert!(generated.contains(&format!("`{}`\n  {russian}\n", entry.name())));
        assert_ne!(russian, entry.message());
        assert!(generated.contains(&format!("## Категория `{}`\n", entry.category())));
    }
    // Issue 22, item 13: the words around the messages are Russian too.
    assert!(generated.starts_with("# Коды ошибок\n"), "{generated}");
    assert!(generated.contains("\nКаждая ошибка несёт `google.rpc.ErrorInfo`"));
    assert!(generated.contains("\n## Сводка\n"));
    assert!(generated
        .contains("| 44 | `API_TOO_MANY_REQUESTS` | api | RESOURCE_EXHAUSTED | 429 | 1 с |"));
    for english in [
        "Error codes",
        "Every error",
        "Summary",
        "Category",
        "retry after",
    ] {
        assert!(
            !generated.contains(english),
            "{english:?} in the Russian docs"
        );
    }
}

#[test]
fn lookup_shows_the_message_in_the_language_asked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["lookup", "11", "--lang", "ru", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["locale"], "ru-RU");
    assert_eq!(
        value["localizedMessage"],
        "Срок действия токена истёк, получите новый."
    );
    let out = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["lookup", "11", "--lang", "fr"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("en-US, ru-RU"));
}
