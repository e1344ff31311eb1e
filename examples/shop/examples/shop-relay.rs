//! A checkout that forwards every order to another checkout, for the
//! interop tests of the generated helpers:
//! `cargo run -p shop-example --example shop-relay -- 127.0.0.1:0 UPSTREAM`
//! prints the address it listens on, then serves until stdin closes.
//!
//! It runs in a real `ErrmapServer`, behind the response layer, and returns
//! the upstream's status as it came. A status the upstream built with a
//! catalog's helpers (Rust, or the ones protoc-gen-errmap generates for
//! Python, TypeScript and Go) passes the layer untouched; anything else is
//! rewritten to the errmap catalog's code for its gRPC code. The caller's
//! metadata is forwarded with the order. For each
//! failed call it prints one JSON line with what the Rust reader,
//! `ErrorStatusExt`, reads from the upstream's status.

use std::net::SocketAddr;

use errmap::catalog_set::Catalogs;
use errmap::{Catalog as _, ErrorCode, ErrorStatusExt as _};
use errmap_server::server::{self, ErrmapServer, ServerConfig};
use shop_example::pb::{
    checkout_client::CheckoutClient,
    checkout_server::{Checkout, CheckoutServer},
    PlaceOrderRequest, PlaceOrderResponse,
};
use shop_example::ShopError;
use tonic::{transport::Channel, Request, Response, Status};

struct Relay {
    upstream: CheckoutClient<Channel>,
}

/// A JSON string literal.
fn json(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the Rust reader makes of `status`, as one JSON line.
fn read(status: &Status) -> String {
    let shop = status.error_code::<ShopError>();
    let errmap = status.error_code::<ErrorCode>();
    let details = status.check_error_details();
    let metadata = match status.error_info_view::<ShopError>() {
        Some((_, view)) => view
            .metadata()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect::<Vec<_>>()
            .join(","),
        None => String::new(),
    };
    let retry_ms = details
        .as_ref()
        .ok()
        .and_then(|d| d.retry_delay())
        .map_or("null".to_owned(), |d| d.as_millis().to_string());
    format!(
        "{{\"grpc_code\":{},\"shop_reason\":{},\"errmap_reason\":{},\"details\":{},\"metadata\":{{{metadata}}},\"retry_ms\":{retry_ms}}}",
        status.code() as i32,
        shop.map_or("null".to_owned(), |c| json(c.entry().name())),
        errmap.map_or("null".to_owned(), |c| json(c.entry().name())),
        match &details {
            Ok(_) => "\"ok\"".to_owned(),
            Err(e) => json(&e.to_string()),
        },
    )
}

#[tonic::async_trait]
impl Checkout for Relay {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let mut upstream = self.upstream.clone();
        // The caller's metadata goes along (its accept-language, say);
        // tonic drops the headers that belong to the connection.
        let (metadata, _, message) = request.into_parts();
        let mut forwarded = Request::new(message);
        *forwarded.metadata_mut() = metadata;
        match upstream.place_order(forwarded).await {
            Ok(reply) => Ok(Response::new(reply.into_inner())),
            Err(status) => {
                println!("{}", read(&status));
                Err(status)
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: shop-relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: the address must be HOST:PORT ({e})");
            std::process::exit(2);
        }
    };
    let upstream = match Channel::from_shared(format!("http://{upstream}")) {
        Ok(endpoint) => CheckoutClient::new(endpoint.connect_lazy()),
        Err(e) => {
            eprintln!("error: bad upstream address {upstream}: {e}");
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
    let stop = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
    };
    let served = ErrmapServer::new(config)
        .add_service(CheckoutServer::new(Relay { upstream }))
        .serve(listener, stop)
        .await;
    if let Err(e) = served {
        eprintln!("error: {e}");
        std::process::exit(3);
    }
}
