//! protoc-gen-errmap on errmap's own catalog: the whole plugin call (decode
//! the `CodeGeneratorRequest`, build the descriptor pool, check the catalog,
//! render, encode the response) per language, and for all three, as
//! `buf generate` with buf.gen.yaml runs it. The request holds the three
//! files of proto/errmap/v1, as protoc sends them.
//!
//! `cargo bench --bench codegen`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

/// A `CodeGeneratorRequest` for proto/errmap/v1 with `parameter`.
fn request(parameter: &str) -> Vec<u8> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut compiler = protox::Compiler::new([root.join("proto")]).expect("proto/");
    compiler.include_imports(true);
    let files = [
        "errmap/v1/catalog.proto",
        "errmap/v1/error_code.proto",
        "errmap/v1/options.proto",
    ];
    compiler.open_files(files).expect("errmap's protos compile");
    let mut out = Vec::new();
    for file in files {
        prost::encoding::string::encode(1, &file.to_owned(), &mut out);
    }
    prost::encoding::string::encode(2, &parameter.to_owned(), &mut out);
    // The set's files (field 1) become the request's proto_file (field 15),
    // byte for byte, options kept.
    let set = compiler.encode_file_descriptor_set();
    let mut buf = set.as_slice();
    while !buf.is_empty() {
        let (_, _) = prost::encoding::decode_key(&mut buf).expect("a key");
        let len = prost::encoding::decode_varint(&mut buf).expect("a length") as usize;
        prost::encoding::encode_key(15, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(len as u64, &mut out);
        out.extend_from_slice(&buf[..len]);
        buf = &buf[len..];
    }
    out
}

fn plugin(c: &mut Criterion) {
    let langs = [
        "lang=python",
        "lang=ts,import_extension=js",
        "lang=go,paths=source_relative",
    ];
    let requests: Vec<Vec<u8>> = langs.iter().map(|p| request(p)).collect();
    for r in &requests {
        // Each request generates one file and no error.
        assert!(errmap_build::plugin::generate(r).expect("generates").len() == 1);
    }
    let mut group = c.benchmark_group("protoc_gen_errmap");
    for (lang, r) in langs.iter().zip(&requests) {
        group.bench_function(lang.split(',').next().unwrap_or(lang), |b| {
            b.iter(|| errmap_build::plugin::run(black_box(r)))
        });
    }
    group.bench_function("all_three", |b| {
        b.iter(|| {
            for r in &requests {
                black_box(errmap_build::plugin::run(black_box(r)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, plugin);
criterion_main!(benches);
