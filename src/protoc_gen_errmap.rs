//! `protoc-gen-errmap`: the protoc plugin that generates typed errmap error
//! helpers for Python, TypeScript and Go.
//!
//! ```sh
//! protoc --plugin=protoc-gen-errmap=target/release/protoc-gen-errmap \
//!   --errmap_out=lang=python:gen/python -I proto proto/errmap/v1/error_code.proto
//! ```
//!
//! or, in a `buf.gen.yaml` v2: `- local: protoc-gen-errmap` with
//! `opt: lang=python` (or `ts`, `go`). The work is
//! `errmap_build::plugin::run`; this binary moves the bytes.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "protoc-gen-errmap: a protoc plugin, which reads a CodeGeneratorRequest on stdin; \
             run it through protoc (--plugin=protoc-gen-errmap=PATH --errmap_out=lang=python:OUT) \
             or buf generate"
        );
        return ExitCode::FAILURE;
    }
    let mut request = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut request) {
        eprintln!("protoc-gen-errmap: cannot read the request from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let response = errmap_build::plugin::run(&request);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&response).and_then(|()| out.flush()) {
        eprintln!("protoc-gen-errmap: cannot write the response to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
