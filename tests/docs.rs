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
        let line = format!(
            "- {} [{}]\n  {}\n",
            entry.number(),
            entry.name(),
            entry.message()
        );
        assert!(markdown.contains(&line), "{line:?} missing");
        assert!(markdown.contains(&format!("## {}\n", entry.category())));
    }
    assert!(markdown
        .contains("| 44 | `API_TOO_MANY_REQUESTS` | api | RESOURCE_EXHAUSTED | 429 | 1 s |"));
}
