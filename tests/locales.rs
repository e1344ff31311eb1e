//! Issue 13 on a real server: a client's `accept-language` picks the locale
//! of the `LocalizedMessage` on every path (a handler's builder, the
//! response layer, admission, the panic layer, the auth interceptor, the
//! lookup service), while `grpc-message` stays the English developer
//! message.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{call_probe, TestServer, INTERNAL_SECRET, LOCALIZED_DEVELOPER_MESSAGE};
use errmap::{
    pb::{
        error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest,
        ListCatalogsRequest, ListErrorsRequest,
    },
    Catalog as _, ErrorCode, ErrorStatusExt as _,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    server::ServerConfig,
};
use http::uri::PathAndQuery;
use tonic::{Request, Status};
use tonic_prost::ProstCodec;

/// What a Russian-first browser sends.
const BROWSER_RU: &str = "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7";

fn ru(code: ErrorCode) -> &'static str {
    code.entry().message_in("ru-RU").unwrap()
}

fn with_language<T>(message: T, accept_language: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = accept_language {
        request
            .metadata_mut()
            .insert("accept-language", value.parse().unwrap());
    }
    request
}

/// Asserts `status` is catalog code `code` with its `LocalizedMessage` in
/// `locale`, the catalog's text for it, and `grpc-message` (and the
/// details' message, which the check compares) left as `message`.
fn assert_localized(status: &Status, code: ErrorCode, locale: &str, message: &str) {
    assert_eq!(status.error_code(), Some(code), "{status:?}");
    let details = status
        .check_error_details()
        .expect("details decode and match grpc-status and grpc-message");
    let localized = details.localized_message().expect("a LocalizedMessage");
    assert_eq!(localized.locale, locale, "{status:?}");
    assert_eq!(
        localized.message,
        code.entry().message_in(locale).unwrap(),
        "{status:?}"
    );
    assert_eq!(status.message(), message, "{status:?}");
    // Exactly one LocalizedMessage, read back with tonic-types too.
    let rpc: tonic_types::pb::Status = prost::Message::decode(status.details()).unwrap();
    let count = rpc
        .details
        .iter()
        .filter(|a| a.type_url.ends_with("google.rpc.LocalizedMessage"))
        .count();
    assert_eq!(count, 1, "{status:?}");
}

#[tokio::test]
async fn a_handler_builds_its_error_in_the_callers_locale() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    let cases = [
        (Some(BROWSER_RU), "ru-RU"),
        (Some("ru"), "ru-RU"),
        (Some("fr-CH, ru;q=0.5"), "ru-RU"),
        (Some("ru;q=0.2, en;q=0.9"), "en-US"),
        (Some("de-DE"), "en-US"),
        (Some("*;q=abc"), "en-US"),
        (None, "en-US"),
    ];
    for (accept_language, locale) in cases {
        let status = call_probe(
            channel.clone(),
            "Localized",
            with_language(String::new(), accept_language),
        )
        .await
        .unwrap_err();
        assert_localized(
            &status,
            ErrorCode::ApiItemNotFound,
            locale,
            LOCALIZED_DEVELOPER_MESSAGE,
        );
        let info = status
            .error_details()
            .unwrap()
            .error_info()
            .unwrap()
            .clone();
        assert_eq!(info.metadata["orderId"], "7", "{accept_language:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn statuses_the_server_makes_follow_the_callers_locale() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    let english = |code: ErrorCode| code.entry().message();

    // The response layer rewrites a handler's bare INTERNAL.
    for (accept_language, locale) in [(Some(BROWSER_RU), "ru-RU"), (None, "en-US")] {
        let status = call_probe(
            channel.clone(),
            "Internal",
            with_language(String::new(), accept_language),
        )
        .await
        .unwrap_err();
        let code = ErrorCode::ApiInternalServerError;
        assert_localized(&status, code, locale, english(code));
        assert!(!format!("{status:?}").contains(INTERNAL_SECRET));
    }

    // ...and a bare NOT_FOUND, keeping its gRPC code.
    let status = call_probe(
        channel.clone(),
        "Plain",
        with_language(String::new(), Some("ru")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let code = ErrorCode::ApiItemNotFound;
    assert_localized(&status, code, "ru-RU", english(code));

    // A panic is 42, from the panic layer.
    let status = call_probe(
        channel.clone(),
        "Panic",
        with_language(String::new(), Some("ru")),
    )
    .await
    .unwrap_err();
    let code = ErrorCode::ApiInternalServerError;
    assert_localized(&status, code, "ru-RU", english(code));

    // A method the server does not serve is 43, from admission.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            with_language(String::new(), Some("ru")),
            PathAndQuery::from_static("/errmap.v1.ErrorCatalog/NoSuchMethod"),
            ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap_err();
    let code = ErrorCode::ApiMethodNotFound;
    assert_localized(&status, code, "ru-RU", english(code));

    // A request over the size limit is 40, from admission.
    let mut client = ErrorCatalogClient::new(channel.clone());
    let status = client
        .get_error(with_language(
            GetErrorRequest {
                key: Some(Key::Name("A".repeat(100 * 1024))),
                domain: None,
            },
            Some("ru"),
        ))
        .await
        .unwrap_err();
    let code = ErrorCode::ApiInvalidRequest;
    assert_localized(&status, code, "ru-RU", english(code));

    // A handler's own catalog status passes the layer as it was built: the
    // layer does not translate what a handler chose.
    let status = call_probe(
        channel.clone(),
        "Rich",
        with_language(String::new(), Some("ru")),
    )
    .await
    .unwrap_err();
    assert_localized(
        &status,
        ErrorCode::AuthUsernameInvalid,
        "en-US",
        "username too short",
    );
    server.stop().await;
}

#[tokio::test]
async fn an_error_in_the_trailers_is_rewritten_in_the_callers_locale() {
    let server = TestServer::start_default().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            with_language("first".to_owned(), Some("ru-UA")),
            PathAndQuery::from_static("/test.v1.Probe/StreamThenFail"),
            ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().as_deref(), Some("first"));
    let status = stream.message().await.unwrap_err();
    let code = ErrorCode::ApiInternalServerError;
    assert_localized(&status, code, "ru-RU", code.entry().message());
    server.stop().await;
}

#[tokio::test]
async fn admission_refusals_follow_the_callers_locale() {
    // One place, held by a slow call: the next is shed with 44.
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 3000, 1).await;
    let status = call_probe(
        channel.clone(),
        "Echo",
        with_language("x".to_owned(), Some("ru")),
    )
    .await
    .unwrap_err();
    let code = ErrorCode::ApiTooManyRequests;
    assert_localized(&status, code, "ru-RU", code.entry().message());
    assert!(status
        .error_details()
        .unwrap()
        .retry_info()
        .is_some_and(|r| r.retry_delay.is_some()));
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

mod auth {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"test secret, 32 bytes or longer.";

    fn token(exp_offset: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        encode(
            &Header::default(),
            &serde_json::json!({"sub": "u1", "exp": now + exp_offset}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_interceptor_refuses_in_the_callers_locale() {
        let mut config = ServerConfig::default();
        config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(SECRET)));
        let server = TestServer::start(config).await;
        let mut client = ErrorCatalogClient::new(server.channel().await);
        let call = |metadata: Vec<(&'static str, String)>| {
            let mut request = Request::new(GetErrorRequest {
                key: Some(Key::Code(11)),
                domain: None,
            });
            for (key, value) in metadata {
                request.metadata_mut().append(key, value.parse().unwrap());
            }
            request
        };

        // No token: 21.
        let status = client
            .get_error(call(vec![("accept-language", BROWSER_RU.into())]))
            .await
            .unwrap_err();
        let code = ErrorCode::AuthRequired;
        assert_localized(&status, code, "ru-RU", code.entry().message());

        // An expired token: 11.
        let status = client
            .get_error(call(vec![
                ("accept-language", "ru".into()),
                ("authorization", format!("Bearer {}", token(-600))),
            ]))
            .await
            .unwrap_err();
        let code = ErrorCode::AuthExpiredToken;
        assert_localized(&status, code, "ru-RU", code.entry().message());

        // A refusal before verification keeps its developer message.
        let status = client
            .get_error(call(vec![
                ("accept-language", "ru".into()),
                ("authorization", format!("Basic {}", token(600))),
            ]))
            .await
            .unwrap_err();
        assert_localized(
            &status,
            ErrorCode::AuthInvalidToken,
            "ru-RU",
            "Only the Bearer scheme is accepted.",
        );

        // Without accept-language: en-US.
        let status = client.get_error(call(vec![])).await.unwrap_err();
        let code = ErrorCode::AuthRequired;
        assert_localized(&status, code, "en-US", code.entry().message());

        // A good token gets the answer, in the locale asked for.
        let found = client
            .get_error(call(vec![
                ("accept-language", "ru".into()),
                ("authorization", format!("Bearer {}", token(600))),
            ]))
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap();
        assert_eq!(found.locale, "ru-RU");
        assert_eq!(found.localized_message, ru(ErrorCode::AuthExpiredToken));
        server.stop().await;
    }
}

#[tokio::test]
async fn lookups_answer_in_the_callers_locale() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);
    let get = |key: Key, accept_language: Option<&str>| {
        with_language(
            GetErrorRequest {
                key: Some(key),
                domain: None,
            },
            accept_language,
        )
    };

    let found = client
        .get_error(get(Key::Code(11), Some(BROWSER_RU)))
        .await
        .unwrap()
        .into_inner()
        .error
        .unwrap();
    assert_eq!(found.name, "AUTH_EXPIRED_TOKEN");
    assert_eq!(found.locale, "ru-RU");
    assert_eq!(found.localized_message, ru(ErrorCode::AuthExpiredToken));
    assert_eq!(found.message, ErrorCode::AuthExpiredToken.entry().message());

    let found = client
        .get_error(get(Key::Name("AUTH_REQUIRED".into()), None))
        .await
        .unwrap()
        .into_inner()
        .error
        .unwrap();
    assert_eq!(found.locale, "en-US");
    assert_eq!(found.localized_message, found.message);

    // Every entry of a list, in the locale asked for.
    for (accept_language, locale) in [(Some("ru"), "ru-RU"), (Some("fr"), "en-US")] {
        let listed = client
            .list_errors(with_language(
                ListErrorsRequest {
                    category: String::new(),
                    domain: None,
                },
                accept_language,
            ))
            .await
            .unwrap()
            .into_inner()
            .errors;
        assert_eq!(listed.len(), ErrorCode::all().len());
        for (descriptor, code) in listed.iter().zip(ErrorCode::all()) {
            assert_eq!(descriptor.locale, locale);
            assert_eq!(
                descriptor.localized_message,
                code.entry().message_in(locale).unwrap()
            );
        }
    }

    // The service's own errors too.
    let status = client
        .get_error(get(Key::Code(9999), Some("ru")))
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    let localized = status
        .error_details()
        .unwrap()
        .localized_message()
        .unwrap()
        .clone();
    assert_eq!(localized.locale, "ru-RU");
    assert_eq!(localized.message, ru(ErrorCode::ApiItemNotFound));

    let status = client
        .list_errors(with_language(
            ListErrorsRequest {
                category: "no_such_category".into(),
                domain: None,
            },
            Some("ru"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
    let details = status.check_error_details().unwrap();
    assert_eq!(details.localized_message().unwrap().locale, "ru-RU");

    let catalogs = client
        .list_catalogs(ListCatalogsRequest {})
        .await
        .unwrap()
        .into_inner()
        .catalogs;
    assert_eq!(catalogs[0].locales, ["en-US", "ru-RU"]);
    server.stop().await;
}

#[tokio::test]
async fn hostile_accept_language_values_fall_back_to_en_us() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    let thousand_tags = vec!["fr-CH;q=0.9"; 1000].join(",") + ",ru";
    let late_tag = format!("{}ru", ",".repeat(40));
    let hostile = [
        ",".repeat(8 * 1024),
        "*;q=abc".to_owned(),
        thousand_tags,
        late_tag,
        "ru;q=1.5".to_owned(),
        "ru-".repeat(500),
        format!("{};q=0.9", "x".repeat(2000)),
    ];
    for value in &hostile {
        assert!(value.len() < 12 * 1024, "under the header list limit");
        let status = call_probe(
            channel.clone(),
            "Localized",
            with_language(String::new(), Some(value)),
        )
        .await
        .unwrap_err();
        assert_localized(
            &status,
            ErrorCode::ApiItemNotFound,
            "en-US",
            LOCALIZED_DEVELOPER_MESSAGE,
        );
    }
    // The server is still well.
    let status = call_probe(
        channel,
        "Localized",
        with_language(String::new(), Some("ru")),
    )
    .await
    .unwrap_err();
    assert_localized(
        &status,
        ErrorCode::ApiItemNotFound,
        "ru-RU",
        LOCALIZED_DEVELOPER_MESSAGE,
    );
    server.stop().await;
}
