//! Links to the catalog pages are a value, not a global (issue 23): the
//! caller passes the base URL to the builder, or the server to its response
//! layer, and every catalog status then links to the page of its code, in
//! one Help detail with the builder's own links after it.

use std::convert::Infallible;

use errmap::{Catalog as _, ErrorCode, ErrorStatusExt as _};
use errmap_server::layer::ErrorLayer;
use tower::{ServiceBuilder, ServiceExt as _};

const BASE: &str = "https://errors.example.com";

fn page(code: ErrorCode) -> String {
    format!("{BASE}/errors/{}", code.entry().name())
}

fn help_urls(status: &tonic::Status) -> Vec<String> {
    let details = status.check_error_details().unwrap();
    details
        .help()
        .map(|h| h.links.iter().map(|l| l.url.clone()).collect())
        .unwrap_or_default()
}

fn help_details(status: &tonic::Status) -> usize {
    let rpc: tonic_types::pb::Status = prost::Message::decode(status.details()).unwrap();
    rpc.details
        .iter()
        .filter(|a| a.type_url.ends_with("google.rpc.Help"))
        .count()
}

#[test]
fn the_builder_links_to_the_page_it_is_given() {
    for code in ErrorCode::all() {
        // No base, no link: nothing is set for the whole process.
        assert!(help_urls(&code.to_status()).is_empty(), "{code}");
        for base in [BASE.to_owned(), format!("{BASE}/")] {
            let status = code.builder().catalog_help(base).build().unwrap();
            assert_eq!(help_urls(&status), [page(code)], "{code}");
            assert_eq!(status.code(), code.entry().grpc_code());
        }
    }
    // A builder's own links join the catalog's, in the one Help detail.
    let status = ErrorCode::AuthPasswordInvalid
        .builder()
        .message("too short")
        .help_link("Password rules", "https://example.com/passwords")
        .catalog_help(BASE)
        .build()
        .unwrap();
    assert_eq!(
        help_urls(&status),
        [
            page(ErrorCode::AuthPasswordInvalid),
            "https://example.com/passwords".to_owned()
        ]
    );
    assert_eq!(help_details(&status), 1);
}

/// The status of `status` once it has left a response layer linking to
/// `BASE`.
async fn through_layer(status: tonic::Status) -> tonic::Status {
    let service = ServiceBuilder::new()
        .layer(ErrorLayer::new().with_help_base_url(BASE))
        .service_fn(move |_: http::Request<()>| {
            let status = status.clone();
            async move {
                let mut response =
                    http::Response::new(http_body_util::Full::<bytes::Bytes>::default());
                status.add_header(response.headers_mut()).unwrap();
                Ok::<_, Infallible>(response)
            }
        });
    let response = service.oneshot(http::Request::new(())).await.unwrap();
    errmap::details::status_from_header_map(response.headers())
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_layer_links_every_catalog_status_that_leaves() {
    // A handler's bare catalog status, and one with metadata.
    for status in [
        ErrorCode::ApiItemNotFound.to_status(),
        ErrorCode::ApiItemNotFound
            .builder()
            .metadata("orderId", "7")
            .build()
            .unwrap(),
    ] {
        let out = through_layer(status).await;
        assert_eq!(out.error_code(), Some(ErrorCode::ApiItemNotFound));
        assert_eq!(help_urls(&out), [page(ErrorCode::ApiItemNotFound)]);
        assert!(out.check_error_details().is_ok());
    }
    // A status the layer rewrites links to the page of the code it gets.
    let out = through_layer(tonic::Status::internal("secret")).await;
    assert_eq!(out.error_code(), Some(ErrorCode::ApiInternalServerError));
    assert_eq!(help_urls(&out), [page(ErrorCode::ApiInternalServerError)]);
    // The builder's links stay, after the catalog's; one Help detail.
    let own = ErrorCode::AuthPasswordInvalid
        .builder()
        .help_link("Password rules", "https://example.com/passwords")
        .build()
        .unwrap();
    let out = through_layer(own).await;
    assert_eq!(
        help_urls(&out),
        [
            page(ErrorCode::AuthPasswordInvalid),
            "https://example.com/passwords".to_owned()
        ]
    );
    assert_eq!(help_details(&out), 1);
    // A status that already links there is left as it is.
    let linked = ErrorCode::AuthRequired
        .builder()
        .catalog_help(BASE)
        .build()
        .unwrap();
    let out = through_layer(linked.clone()).await;
    assert_eq!(out.details(), linked.details());
}
