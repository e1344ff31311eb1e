//! The shop's checkout in a real errmap server, for clients in other
//! languages: `cargo run -p shop-example --example shop-server -- 127.0.0.1:0`
//! prints the address it listens on, then serves until stdin closes or the
//! process is stopped. The server serves the shop's catalog beside the
//! default one, reflection included.

use std::net::SocketAddr;

use errmap::catalog_set::Catalogs;
use errmap_server::server::{self, ErrmapServer, ServerConfig};
use shop_example::{pb::checkout_server::CheckoutServer, Checkout, ShopError, FILE_DESCRIPTOR_SET};

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
    {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: the address must be HOST:PORT ({e})");
            std::process::exit(2);
        }
    };
    let listener = match server::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            std::process::exit(3);
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let mut config = ServerConfig::default();
    config.catalogs = match Catalogs::default().with_catalog::<ShopError>() {
        Ok(catalogs) => catalogs.into(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {bound}");
    // Stops when stdin closes: the test that started it is gone.
    let stop = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
    };
    let served = ErrmapServer::new(config)
        .add_service(CheckoutServer::new(Checkout))
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .serve(listener, stop)
        .await;
    if let Err(e) = served {
        eprintln!("error: {e}");
        std::process::exit(3);
    }
}
