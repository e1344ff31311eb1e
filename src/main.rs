//! The `errmap` command-line tool.

fn main() {
    println!("errmap {}", env!("CARGO_PKG_VERSION"));
}
