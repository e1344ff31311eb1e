//! gen/ holds errmap's own catalog generated for Python, TypeScript and Go by
//! protoc-gen-errmap (`buf generate` with buf.gen.yaml). This test fails when
//! gen/ is stale: it runs the plugin's library on the protos of proto/ with
//! the options buf.gen.yaml gives, and compares. (scripts/test.sh also runs
//! the real `buf generate` and compares the whole tree, protoc-gen-es's files
//! included.)

use std::path::PathBuf;

use errmap_build::plugin::{generate_from_pool, GoPaths, ImportExtension, Lang, Options};

#[test]
fn gen_is_what_buf_generate_writes_today() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("buf.gen.yaml")).unwrap();
    let mut compiler = protox::Compiler::new([root.join("proto")]).unwrap();
    compiler.include_imports(true);
    let files = [
        "errmap/v1/catalog.proto",
        "errmap/v1/error_code.proto",
        "errmap/v1/options.proto",
    ];
    compiler.open_files(files).unwrap();
    let pool = compiler.descriptor_pool();
    let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    let cases = [
        (
            "gen/python",
            "lang=python",
            Lang::Python,
            ImportExtension::None,
            GoPaths::Import,
        ),
        (
            "gen/ts",
            "lang=ts,import_extension=js",
            Lang::TypeScript,
            ImportExtension::Js,
            GoPaths::Import,
        ),
        (
            "gen/go",
            "lang=go,paths=source_relative",
            Lang::Go,
            ImportExtension::None,
            GoPaths::SourceRelative,
        ),
    ];
    let mut stale = Vec::new();
    for (out, opt, lang, import_extension, go_paths) in cases {
        // The options here are the ones buf.gen.yaml gives the plugin.
        assert!(
            config.contains(&format!("out: {out}\n    opt: {opt}\n")),
            "buf.gen.yaml no longer generates {out} with {opt}"
        );
        let options = Options {
            lang,
            import_extension,
            go_paths,
        };
        assert_eq!(Options::parse(Some(opt)).unwrap(), options);
        let generated = generate_from_pool(&pool, &files, &options).unwrap();
        assert_eq!(generated.len(), 1, "{out}: one catalog file");
        for file in generated {
            let path = root.join(out).join(&file.name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(file.content.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "gen/ is stale: {stale:?}; run `buf generate` at the repository root (README, \"Other languages: generated helpers\")"
    );
}

#[test]
fn the_readme_shows_buf_gen_yaml_as_it_is() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let config = std::fs::read_to_string(root.join("buf.gen.yaml")).unwrap();
    let marker = "<!-- readme-snippet: buf-gen ";
    let at = readme.find(marker).expect("the buf-gen snippet");
    let block = readme[at..]
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("a yaml block after the marker");
    assert_eq!(
        block, config,
        "README.md's buf.gen.yaml differs from the file"
    );
}
