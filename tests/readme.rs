//! The README's Rust snippets paste as shown (issue 22, item 5): the doc
//! tests (`ReadmeDoctests` in `src/lib.rs`) compile and run each one, and
//! this test holds that none hides a line behind rustdoc's `# `, and that
//! every one the doc tests skip (`ignore`) is compiled by another test,
//! named by its `readme-snippet` marker.

use std::path::Path;

/// Each fenced block: (its info string, its first line number, its lines,
/// the `readme-snippet` marker above it, if any).
fn blocks(text: &str) -> Vec<(String, usize, Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, Vec<String>, Option<String>)> = None;
    let mut marker: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((info, start, mut body, mark)) = open.take() {
            if line.starts_with("```") {
                out.push((info, start, body, mark));
            } else {
                body.push(line.to_owned());
                open = Some((info, start, body, mark));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("<!-- readme-snippet: ") {
            marker = rest.split_whitespace().next().map(str::to_owned);
            continue;
        }
        if let Some(info) = line.strip_prefix("```") {
            open = Some((info.trim().to_owned(), i + 1, Vec::new(), marker.take()));
        } else if !line.trim().is_empty() {
            marker = None;
        }
    }
    assert!(open.is_none(), "README.md ends inside a fenced block");
    out
}

#[test]
fn the_readmes_rust_snippets_paste_as_shown() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = blocks(&text);
    let rust: Vec<_> = blocks
        .iter()
        .filter(|(info, ..)| info.split(',').next() == Some("rust"))
        .collect();
    assert!(rust.len() >= 8, "{} Rust snippets", rust.len());
    for (info, line, body, marker) in &rust {
        for (n, l) in body.iter().enumerate() {
            assert!(
                !(l == "#" || l.starts_with("# ")),
                "README.md:{}: a hidden doc-test line, which a reader cannot paste: {l}",
                line + 1 + n
            );
        }
        if info.split(',').any(|f| f == "ignore") {
            // Compiled elsewhere: examples/shop's build.rs takes these by
            // their marker, and its tests/readme.rs runs them.
            let marker = marker.as_deref().unwrap_or_else(|| {
                panic!("README.md:{line}: an `ignore` snippet no test compiles")
            });
            let shop_build = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/build.rs"),
            )
            .unwrap();
            assert!(
                shop_build.contains(&format!("{marker:?}")) || marker == "shop-build",
                "README.md:{line}: the snippet {marker} is compiled by no test"
            );
        }
    }
    // The build.rs snippet is the example's own call, word for word.
    let (_, line, body, _) = blocks
        .iter()
        .find(|(.., m)| m.as_deref() == Some("shop-build"))
        .expect("the shop-build snippet");
    let call = body
        .iter()
        .find(|l| l.contains("errmap_build::configure()"))
        .unwrap_or_else(|| panic!("README.md:{line}: no errmap_build call"));
    let shop_build = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/build.rs"),
    )
    .unwrap();
    assert!(
        shop_build.contains(call.trim()),
        "examples/shop/build.rs does not make the README's call: {call}"
    );
}
