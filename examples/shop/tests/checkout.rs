//! The shop's checkout in a real errmap server on 127.0.0.1: its
//! `ShopError` codes reach a tonic client, which reads them back with
//! `ErrorStatusExt`; the server's lookup service answers for the shop's
//! domain beside the default one.

use std::net::SocketAddr;

use errmap::{
    catalog_set::Catalogs,
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    Catalog as _, ErrorCode, ErrorStatusExt,
};

use errmap_server::server::{self, ErrmapServer, ServerConfig};
use shop_example::{
    pb::{checkout_client::CheckoutClient, checkout_server::CheckoutServer, PlaceOrderRequest},
    Checkout, ShopError, FILE_DESCRIPTOR_SET,
};
use tonic::transport::Channel;

async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>, Channel) {
    let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::default();
    config.catalogs = Catalogs::default()
        .with_catalog::<ShopError>()
        .unwrap()
        .into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = ErrmapServer::new(config)
        .add_service(CheckoutServer::new(Checkout))
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET);
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (addr, stop, channel)
}

fn order(cart: &str, quantity: i32, card: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        cart_id: cart.into(),
        quantity,
        card: card.into(),
    }
}

#[tokio::test]
async fn every_code_the_service_returns_reads_back() {
    let (_addr, stop, channel) = start().await;
    let mut client = CheckoutClient::new(channel);
    for (request, expected) in [
        (order("c1", 0, "ok"), ShopError::QuantityInvalid),
        (order("missing", 1, "ok"), ShopError::CartNotFound),
        (order("sold-out", 1, "ok"), ShopError::OutOfStock),
        (order("c1", 1, "declined"), ShopError::CardDeclined),
        (
            order("c1", 1, "provider-down"),
            ShopError::PaymentProviderDown,
        ),
    ] {
        let status = client.place_order(request).await.unwrap_err();
        assert_eq!(
            status.error_code::<ShopError>(),
            Some(expected),
            "{status:?}"
        );
        assert_eq!(
            status.error_code::<ErrorCode>(),
            None,
            "not the auth catalog's"
        );
        assert_eq!(status.code(), expected.entry().grpc_code());
        assert_eq!(status.message(), expected.entry().message());
        let details = status.check_error_details().expect("the details read back");
        assert_eq!(details.retry_delay(), expected.entry().retry_delay());
        let info = details.error_info().unwrap();
        assert_eq!(info.domain, "shop.example.com");
        assert_eq!(info.metadata["code"], expected.entry().number_str());
    }
    let violations = client
        .place_order(order("c1", -1, "ok"))
        .await
        .unwrap_err()
        .error_details()
        .unwrap()
        .bad_request()
        .unwrap()
        .field_violations
        .clone();
    assert_eq!(violations[0].field, "quantity");
    let placed = client.place_order(order("c7", 2, "ok")).await.unwrap();
    assert_eq!(placed.into_inner().order_id, "order-c7");
    let _ = stop.send(());
}

/// Each catalog has its own locales: the shop's are en-US, de-DE and
/// ru-RU, the auth catalog's en-US and ru-RU. One accept-language, two
/// answers.
#[tokio::test]
async fn each_catalog_answers_in_the_locales_it_has() {
    assert_eq!(ShopError::table().locales(), ["en-US", "de-DE", "ru-RU"]);
    let (_addr, stop, channel) = start().await;
    let mut client = CheckoutClient::new(channel.clone());
    let asking = |value: &str, request: PlaceOrderRequest| {
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("accept-language", value.parse().unwrap());
        request
    };
    for (accept_language, locale) in [
        ("de-CH, de;q=0.9, en;q=0.5", "de-DE"),
        ("de-DE, ru;q=0.3", "de-DE"),
        ("fr-FR, ru;q=0.3", "ru-RU"),
        ("fr-FR", "en-US"),
    ] {
        for (request, code) in [
            (order("c1", 0, "ok"), ShopError::QuantityInvalid),
            (order("sold-out", 1, "ok"), ShopError::OutOfStock),
        ] {
            let status = client
                .place_order(asking(accept_language, request))
                .await
                .unwrap_err();
            assert_eq!(status.error_code::<ShopError>(), Some(code));
            let details = status.check_error_details().unwrap();
            let localized = details.localized_message().unwrap();
            assert_eq!(localized.locale, locale, "{accept_language}");
            assert_eq!(
                Some(localized.message.as_str()),
                code.entry().message_in(locale)
            );
            assert_eq!(status.message(), code.entry().message());
        }
    }
    // The same header on the server's own lookup service: ru-RU there,
    // as the auth catalog has no German.
    let mut lookup = ErrorCatalogClient::new(channel);
    let mut request = tonic::Request::new(GetErrorRequest {
        key: Some(Key::Code(9999)),
        domain: None,
    });
    request
        .metadata_mut()
        .insert("accept-language", "de-DE, ru;q=0.3".parse().unwrap());
    let status = lookup.get_error(request).await.unwrap_err();
    let details = status.check_error_details().unwrap();
    assert_eq!(details.localized_message().unwrap().locale, "ru-RU");
    let _ = stop.send(());
}

#[tokio::test]
async fn the_lookup_service_answers_for_the_shop_and_lists_both_catalogs() {
    let (_addr, stop, channel) = start().await;
    let mut lookup = ErrorCatalogClient::new(channel);
    let found = lookup
        .get_error(GetErrorRequest {
            key: Some(Key::Name("SHOP_ERROR_OUT_OF_STOCK".into())),
            domain: Some("shop.example.com".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .error
        .unwrap();
    assert_eq!(found.code, Some(2));
    assert_eq!(found.http_status, 409);
    let catalogs = lookup
        .list_catalogs(errmap::pb::ListCatalogsRequest {})
        .await
        .unwrap()
        .into_inner()
        .catalogs;
    let domains: Vec<&str> = catalogs.iter().map(|c| c.domain.as_str()).collect();
    assert_eq!(domains, ["auth.errmap.dev", "shop.example.com"]);
    assert_eq!(catalogs[1].enum_name, "shop.v1.ShopError");
    assert_eq!(
        catalogs[1].code_count, 7,
        "the UNSPECIFIED zero is not a code"
    );
    let _ = stop.send(());
}

/// The response layer rewrites into a team's own catalog, whose catalog is
/// the only one served (issue 23: the rewrite target is generic over the
/// catalog, not errmap's `ErrorCode` alone).
#[tokio::test]
async fn the_layer_rewrites_into_the_teams_own_codes() {
    use errmap_server::layer::{Classified, ErrorLayer};
    use tonic::Code;
    use tower::{ServiceBuilder, ServiceExt as _};

    let policy = |code: Code| match code {
        Code::NotFound => Some(Classified::new(ShopError::CartNotFound)),
        Code::Ok | Code::Cancelled | Code::DeadlineExceeded => None,
        _ => Some(Classified::with_grpc_code(
            ShopError::PaymentProviderDown,
            Code::Unavailable,
        )),
    };
    let catalogs = Catalogs::empty().with_catalog::<ShopError>().unwrap();
    for (bare, expected, grpc) in [
        (Code::NotFound, ShopError::CartNotFound, Code::NotFound),
        (
            Code::Internal,
            ShopError::PaymentProviderDown,
            Code::Unavailable,
        ),
    ] {
        let service = ServiceBuilder::new()
            .layer(ErrorLayer::custom(policy).with_catalogs(catalogs.clone()))
            .service_fn(move |_: http::Request<()>| async move {
                let mut response =
                    http::Response::new(http_body_util::Full::<bytes::Bytes>::default());
                tonic::Status::new(bare, "internal detail")
                    .add_header(response.headers_mut())
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            });
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), grpc);
        assert_eq!(status.error_code::<ShopError>(), Some(expected));
        assert_eq!(status.message(), expected.entry().message());
        let info = status
            .error_details()
            .unwrap()
            .error_info()
            .unwrap()
            .clone();
        assert_eq!(info.domain, "shop.example.com");
    }
}
