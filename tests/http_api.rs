//! Issue 15 on a real server: the HTTP/JSON lookup API and the catalog
//! pages on the gRPC port, read with hyper's HTTP/1.1 client, and the Help
//! links of `--public-url`.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{binary, TestServer};
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    Catalog as _, ErrorCode, ErrorStatusExt as _,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    http_error::Shape,
    server::ServerConfig,
};
use serde_json::Value;

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A GET over HTTP/1.1 with hyper's client.
async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(http::Method::GET, url, headers).await
}

/// A request with `method` and no body over HTTP/1.1 with hyper's client.
async fn send(method: http::Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let (status, headers, body) =
        common::http_request(false, method, url, headers, Vec::new()).await;
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn base(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

/// HEAD is GET without the body; other methods get 405 with `Allow`,
/// not the 400 of a broken gRPC-Web call.
#[tokio::test]
async fn head_is_served_and_other_methods_get_405() {
    let server = TestServer::start_default().await;
    let url = base(&server);
    for path in ["/", "/errors/AUTH_REQUIRED", "/v1/errors/21", "/v1/errors"] {
        let got = get(&format!("{url}{path}"), &[]).await;
        let head = send(http::Method::HEAD, &format!("{url}{path}"), &[]).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(head.body, "", "HEAD {path} sent a body");
        assert_eq!(
            head.headers["content-type"], got.headers["content-type"],
            "HEAD {path}"
        );
        assert_eq!(
            head.headers["content-length"],
            got.body.len().to_string().as_str(),
            "HEAD {path}"
        );
        for method in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ] {
            let refused = send(method.clone(), &format!("{url}{path}"), &[]).await;
            assert_eq!(refused.status, 405, "{method} {path}");
            assert_eq!(refused.headers["allow"], "GET, HEAD", "{method} {path}");
        }
    }
    // gRPC on the same port still works.
    let name = common::error_name(server.channel().await, 21).await;
    assert_eq!(name.unwrap(), "AUTH_REQUIRED");
    server.stop().await;
}

#[tokio::test]
async fn lookup_hit_miss_and_list_over_http() {
    let server = TestServer::start_default().await;
    let url = base(&server);

    // A hit, by number and by name (any case): the descriptor as proto3 JSON.
    for key in ["11", "AUTH_EXPIRED_TOKEN", "auth_expired_token"] {
        let hit = get(&format!("{url}/v1/errors/{key}"), &[]).await;
        assert_eq!(hit.status, 200, "{key}: {}", hit.body);
        assert_eq!(hit.headers["content-type"], "application/json");
        let d = &hit.json()["error"];
        assert_eq!(d["name"], "AUTH_EXPIRED_TOKEN");
        // The number, as a JSON number, in both fields (issue 22): by
        // name, `code` would print errmap's value of that number.
        assert_eq!(d["code"], 11);
        assert_eq!(d["number"], 11);
        assert_eq!(d["httpStatus"], 400);
        assert_eq!(d["locale"], "en-US");
    }
    // In the caller's language.
    let hit = get(&format!("{url}/v1/errors/11"), &[("accept-language", "ru")]).await;
    assert_eq!(hit.json()["error"]["locale"], "ru-RU");

    // A miss: the legacy body by default, 404 from the catalog.
    let miss = get(&format!("{url}/v1/errors/48"), &[]).await;
    assert_eq!(miss.status, 404);
    let body = miss.json();
    assert_eq!(body["v"], "1");
    assert_eq!(body["error"]["code"], 47);
    assert_eq!(body["error"]["status"], 404);

    // A list, filtered, checked against the catalog.
    let listed = get(&format!("{url}/v1/errors?category=oauth"), &[]).await;
    assert_eq!(listed.status, 200);
    let names: Vec<String> = listed.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    let oauth: Vec<String> = ErrorCode::all()
        .filter(|c| c.entry().category() == "oauth")
        .map(|c| c.entry().name().to_owned())
        .collect();
    assert_eq!(names, oauth);
    let all = get(&format!("{url}/v1/errors"), &[]).await;
    assert_eq!(
        all.json()["errors"].as_array().unwrap().len(),
        ErrorCode::all().len()
    );

    // A bad category and a bad domain are mapped errors too.
    let bad = get(&format!("{url}/v1/errors?category=nope"), &[]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], 40);
    let bad = get(&format!("{url}/v1/errors/1?domain=no.such.domain"), &[]).await;
    assert_eq!(bad.status, 404);
    assert_eq!(bad.json()["error"]["code"], 47);

    // gRPC still works on the same port.
    let mut client = ErrorCatalogClient::new(server.channel().await);
    let found = client
        .get_error(GetErrorRequest {
            key: Some(Key::Code(11)),
            domain: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.error.unwrap().name, "AUTH_EXPIRED_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn accept_and_the_default_format_pick_the_shape() {
    let mut config = ServerConfig::default();
    config.http_error_format = Shape::Google;
    let server = TestServer::start(config).await;
    let url = format!("{}/v1/errors/48", base(&server));

    let google = get(&url, &[]).await;
    assert_eq!(google.headers["content-type"], "application/json");
    let body = google.json();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    assert_eq!(
        body["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );

    let problem = get(&url, &[("accept", "application/problem+json")]).await;
    assert_eq!(problem.headers["content-type"], "application/problem+json");
    let body = problem.json();
    assert_eq!(body["reason"], "API_ITEM_NOT_FOUND");
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "about:blank");

    // q=0 refuses problem+json: the default again.
    let refused = get(&url, &[("accept", "application/problem+json;q=0")]).await;
    assert_eq!(refused.headers["content-type"], "application/json");
    server.stop().await;
}

#[tokio::test]
async fn tokens_come_from_the_header_or_the_query() {
    let secret: &[u8] = b"http api secret, 32 bytes or more";
    let mut config = ServerConfig::default();
    config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(secret)));
    let server = TestServer::start(config).await;
    let url = format!("{}/v1/errors/11", base(&server));
    let token = |offset: i64| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "http", "exp": now + offset}),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };

    let anonymous = get(&url, &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    assert_eq!(anonymous.json()["error"]["code"], 21);

    let expired = get(
        &url,
        &[("authorization", &format!("Bearer {}", token(-600)))],
    )
    .await;
    assert_eq!(expired.status, 400, "11 was 400 in the legacy API");
    assert_eq!(
        expired.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(expired.json()["error"]["code"], 11);

    let by_header = get(
        &url,
        &[("authorization", &format!("Bearer {}", token(600)))],
    )
    .await;
    assert_eq!(by_header.status, 200, "{}", by_header.body);
    let by_query = get(&format!("{url}?token={}", token(600)), &[]).await;
    assert_eq!(by_query.status, 200, "{}", by_query.body);
    server.stop().await;
}

/// A token is a credential: the pages never copy it into a link, and what
/// answers a request that carried one (or an `Authorization` header,
/// whether or not auth is on) is for that caller alone.
#[tokio::test]
async fn credentials_are_never_echoed_nor_cached() {
    let server = TestServer::start_default().await;
    let base = base(&server);
    for path in ["/", "/errors/AUTH_REQUIRED", "/v1/errors/21"] {
        let plain = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(plain.status, 200, "{path}");
        assert_ne!(
            plain
                .headers
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("private, no-store"),
            "{path}: a request without credentials may be cached"
        );
        let with_token = get(&format!("{base}{path}?lang=ru&token=s3cr3t-t0ken"), &[]).await;
        assert_eq!(with_token.status, 200, "{path}");
        assert!(
            !with_token.body.contains("s3cr3t-t0ken"),
            "{path} echoes the token: {}",
            with_token.body
        );
        let bearer = get(
            &format!("{base}{path}"),
            &[("authorization", "Bearer s3cr3t-t0ken")],
        )
        .await;
        for reply in [&with_token, &bearer] {
            assert_eq!(
                reply
                    .headers
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("private, no-store"),
                "{path}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn admission_limits_apply_to_the_http_api() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 3000, 1).await;
    let shed = get(&format!("{}/v1/errors/11", base(&server)), &[]).await;
    assert_eq!(shed.status, 429);
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(shed.json()["error"]["code"], 44);
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

/// The `<tr id="NAME">` rows of a catalog page.
fn rows(page: &str) -> Vec<String> {
    page.split("<tr id=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

#[tokio::test]
async fn the_catalog_pages() {
    let server = TestServer::start_default().await;
    let url = base(&server);

    let index = get(&format!("{url}/"), &[]).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert!(index.body.len() < 50 * 1024, "{} bytes", index.body.len());
    let listed = rows(&index.body);
    let catalog: Vec<String> = ErrorCode::all()
        .map(|c| c.entry().name().to_owned())
        .collect();
    assert_eq!(listed, catalog, "every code, in code order");
    for code in ErrorCode::all() {
        assert!(index
            .body
            .contains(&format!("href=\"/errors/{}\"", code.entry().name())));
    }

    // Filters, without JavaScript: by category, by text, both.
    let oauth = get(&format!("{url}/?category=oauth"), &[]).await;
    let want: Vec<String> = ErrorCode::all()
        .filter(|c| c.entry().category() == "oauth")
        .map(|c| c.entry().name().to_owned())
        .collect();
    assert_eq!(rows(&oauth.body), want);
    let text = get(&format!("{url}/?q=Expired"), &[]).await;
    let want: Vec<String> = ErrorCode::all()
        .map(|c| c.entry())
        .filter(|e| {
            e.name().to_lowercase().contains("expired")
                || e.message().to_lowercase().contains("expired")
        })
        .map(|e| e.name().to_owned())
        .collect();
    assert!(want.contains(&"AUTH_EXPIRED_TOKEN".to_owned()));
    assert_eq!(rows(&text.body), want);
    let none = get(&format!("{url}/?category=oauth&q=expired"), &[]).await;
    assert!(rows(&none.body).is_empty());

    // In Russian: by Accept-Language, or by the switch's ?lang=.
    let russian = get(&format!("{url}/?q=expired"), &[("accept-language", "ru")]).await;
    assert!(russian.body.contains("<html lang=\"ru-RU\">"));
    assert!(russian.body.contains(
        ErrorCode::AuthExpiredToken
            .entry()
            .message_in("ru-RU")
            .unwrap()
    ));
    let switched = get(&format!("{url}/errors/AUTH_EXPIRED_TOKEN?lang=ru-RU"), &[]).await;
    assert!(switched.body.contains("<html lang=\"ru-RU\">"));
    assert!(switched.body.contains("hreflang=\"en-US\""));

    // One code's page, with what a client should do.
    let page = get(&format!("{url}/errors/API_TOO_MANY_REQUESTS"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.len() < 50 * 1024);
    assert!(page
        .body
        .contains("<h1><code>API_TOO_MANY_REQUESTS</code> (44)</h1>"));
    assert!(page.body.contains("Wait at least 1 s"));

    // An unknown code's page: 404, mapped.
    let missing = get(&format!("{url}/errors/NO_SUCH_CODE"), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], 47);

    // Peer text never reaches the page unescaped.
    let hostile = get(&format!("{url}/?q=%3Cscript%3Ealert(1)%3C/script%3E"), &[]).await;
    assert!(!hostile.body.contains("<script>"));
    assert!(hostile.body.contains("&#60;script&#62;") || hostile.body.contains("&lt;script&gt;"));
    server.stop().await;
}

#[test]
fn with_public_url_every_error_links_to_its_page_and_the_link_resolves() {
    let mut served = binary::serve(&["--public-url", "http://errors.example.test/"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = served.url();
        let mut client = common::catalog_client(url.clone()).await.unwrap();
        let status = client
            .get_error(GetErrorRequest {
                key: Some(Key::Code(48)),
                domain: None,
            })
            .await
            .unwrap_err();
        let details = status.check_error_details().unwrap();
        let links = &details.help().expect("a Help detail").links;
        assert_eq!(links.len(), 1);
        assert_eq!(
            links[0].url,
            "http://errors.example.test/errors/API_ITEM_NOT_FOUND"
        );
        // The link's path resolves on the running server.
        let path = links[0]
            .url
            .trim_start_matches("http://errors.example.test");
        let page = get(&format!("{url}{path}"), &[]).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("API_ITEM_NOT_FOUND"));
        // RFC 9457's type is the same page.
        let problem = get(
            &format!("{url}/v1/errors/48"),
            &[("accept", "application/problem+json")],
        )
        .await;
        assert_eq!(problem.json()["type"], links[0].url);
    });
    served.stop();
}

/// The shop's catalog, compiled by protox as `protoc --include_imports`
/// would, and loaded as `--catalog` loads it.
fn shop_catalogs() -> errmap::catalog_set::Catalogs {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compiler =
        protox::Compiler::new([root.join("examples/shop/proto"), root.join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("shop/v1/shop.proto").unwrap();
    let bytes = compiler.encode_file_descriptor_set();
    let shop = errmap::catalog_set::load_descriptor_set(&bytes, "shop.binpb")
        .unwrap()
        .remove(0);
    errmap::catalog_set::Catalogs::default()
        .with(shop, "shop.binpb")
        .unwrap()
}

/// Every string in `value`, anywhere in it.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Issue 22, item 1: every descriptor, of every catalog, carries its number
/// as a JSON number, and no field names another catalog's value. Before
/// the fix, the shop's 1 printed `"code":"AUTH_EMAIL_TAKEN"` and its 4 a
/// bare `"code":4`, and the default catalog's 21 carried no 21 at all.
#[tokio::test]
async fn every_catalogs_descriptors_carry_their_number_as_json() {
    let mut config = ServerConfig::default();
    config.catalogs = shop_catalogs().into();
    let server = TestServer::start(config).await;
    let url = base(&server);
    let errmap_names: Vec<&str> = ErrorCode::all().map(|c| c.entry().name()).collect();

    for (path, number, name) in [
        (
            "/v1/errors/1?domain=shop.example.com",
            1,
            "SHOP_ERROR_CARD_DECLINED",
        ),
        (
            "/v1/errors/4?domain=shop.example.com",
            4,
            "SHOP_ERROR_PAYMENT_PROVIDER_DOWN",
        ),
        ("/v1/errors/21", 21, "AUTH_REQUIRED"),
        ("/v1/errors/0", 0, "AUTH_USERNAME_TAKEN"),
    ] {
        let hit = get(&format!("{url}{path}"), &[]).await;
        assert_eq!(hit.status, 200, "{path}: {}", hit.body);
        let d = &hit.json()["error"];
        assert_eq!(d["code"], number, "{path}: {}", hit.body);
        assert_eq!(d["number"], number, "{path}: {}", hit.body);
        assert_eq!(d["name"], name, "{path}");
        let mut texts = Vec::new();
        strings(d, &mut texts);
        for text in &texts {
            assert!(
                text == name || !errmap_names.contains(&text.as_str()),
                "{path} names another value, {text}: {}",
                hit.body
            );
        }
    }
    // The list too: each entry's number, in code order.
    let listed = get(&format!("{url}/v1/errors?domain=shop.example.com"), &[]).await;
    let numbers: Vec<Value> = listed.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["number"].clone())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7].map(Value::from));
    server.stop().await;
}

/// Issue 22, item 7: a plain HTTP request for a path that is neither the
/// API's nor the pages' gets 404 with the catalog's 43 in the configured
/// shape, not tonic-web's empty 400.
#[tokio::test]
async fn unknown_paths_get_404_with_the_catalogs_43() {
    let server = TestServer::start_default().await;
    let url = base(&server);
    for path in ["/nope", "/v1/nope", "/v1/errorsX", "/a/b/c"] {
        for method in [http::Method::GET, http::Method::POST] {
            let got = send(method.clone(), &format!("{url}{path}"), &[]).await;
            assert_eq!(got.status, 404, "{method} {path}: {}", got.body);
            assert_eq!(got.headers["content-type"], "application/json");
            let body = got.json();
            assert_eq!(body["error"]["code"], 43, "{method} {path}: {}", got.body);
            assert_eq!(body["error"]["status"], 404);
        }
    }
    // A gRPC method's path without a gRPC content type: 415 (the gRPC
    // spec's answer), with the catalog's 40 in the body and as the
    // trailers-only gRPC status.
    for path in [
        "/errmap.v1.ErrorCatalog/GetError",
        "/no.such.Service/Method",
    ] {
        let got = send(http::Method::POST, &format!("{url}{path}"), &[]).await;
        assert_eq!(got.status, 415, "{path}: {}", got.body);
        assert_eq!(got.json()["error"]["code"], 40, "{path}: {}", got.body);
        assert_eq!(got.json()["error"]["status"], 415, "{path}: {}", got.body);
        assert_eq!(got.headers["grpc-status"], "3", "{path}");
        let status = tonic::Status::from_header_map(&got.headers).unwrap();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
    }
    // The shape follows Accept, as for the API's own errors.
    let got = get(
        &format!("{url}/nope"),
        &[("accept", "application/problem+json")],
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(got.headers["content-type"], "application/problem+json");
    assert_eq!(got.json()["reason"], "API_METHOD_NOT_FOUND");
    server.stop().await;
}

/// Issue 25: a templated code's placeholders, in the JSON (as
/// `ErrorDescriptor.params`) and on its page; a plain code has none.
#[tokio::test]
async fn a_templated_codes_params_are_in_the_json_and_on_its_page() {
    let mut config = ServerConfig::default();
    config.catalogs = shop_catalogs().into();
    let server = TestServer::start(config).await;
    let url = base(&server);

    let hit = get(&format!("{url}/v1/errors/6?domain=shop.example.com"), &[]).await;
    assert_eq!(hit.status, 200, "{}", hit.body);
    let d = &hit.json()["error"];
    assert_eq!(d["name"], "SHOP_ERROR_QUANTITY_OVER_LIMIT");
    assert_eq!(d["params"], serde_json::json!(["quantity", "limit"]));
    assert_eq!(
        d["message"],
        "The quantity {quantity} exceeds the limit of {limit} per order."
    );
    let plain = get(&format!("{url}/v1/errors/21"), &[]).await;
    assert!(
        plain.json()["error"].get("params").is_none(),
        "{}",
        plain.body
    );

    let page = get(
        &format!("{url}/errors/SHOP_ERROR_QUANTITY_OVER_LIMIT?domain=shop.example.com"),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"<dd id="params"><code>quantity</code>, <code>limit</code></dd>"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<code>metadata["quantity"]</code>"#),
        "{}",
        page.body
    );
    let plain_page = get(&format!("{url}/errors/AUTH_REQUIRED"), &[]).await;
    assert!(plain_page.body.contains(r#"<dd id="params">none</dd>"#));
    server.stop().await;
}

/// Issue 25: a reload (a `store` on `ServerConfig::catalogs`, what
/// `errmap serve` does on SIGHUP or a file change) reaches every part at
/// its next call: the response layer passes the new catalog's statuses,
/// ListCatalogs lists it with its hash, the HTTP API and the pages answer
/// for it, and the metrics' `errmap_catalog_info` names it.
#[tokio::test]
async fn a_reload_reaches_the_layer_lookups_http_pages_and_metrics() {
    let with_shop = shop_catalogs();
    let shop = with_shop.by_domain("shop.example.com").unwrap().clone();
    let metrics = errmap_server::metrics::Metrics::new();
    let mut config = ServerConfig::default();
    config.metrics = Some(metrics.clone());
    let live = config.catalogs.clone();
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let url = base(&server);
    let declined = shop.status_of(shop.by_number(1).unwrap());

    let before = async |channel: tonic::transport::Channel| {
        *server.probe.next.lock().unwrap() = Some(declined.clone());
        common::call_probe(channel, "Return", tonic::Request::new(String::new()))
            .await
            .unwrap_err()
    };
    // Before: the shop's status is not a catalog status here; the layer
    // rewrites it into errmap's own catalog.
    let got = before(channel.clone()).await;
    assert!(got.error_code::<ErrorCode>().is_some(), "{got:?}");
    assert_ne!(got.details(), declined.details());
    assert_eq!(
        get(&format!("{url}/v1/errors/1?domain=shop.example.com"), &[])
            .await
            .status,
        404
    );
    assert!(!metrics.encode(false).contains("shop.example.com"));

    live.store(with_shop.clone());

    // After: passed byte for byte.
    let got = before(channel.clone()).await;
    assert_eq!(got.message(), declined.message());
    assert_eq!(got.details(), declined.details());
    let listed = ErrorCatalogClient::new(channel)
        .list_catalogs(errmap::pb::ListCatalogsRequest {})
        .await
        .unwrap()
        .into_inner()
        .catalogs;
    let hash = format!("{:016x}", shop.content_hash());
    assert!(
        listed
            .iter()
            .any(|c| c.domain == "shop.example.com" && c.content_hash == hash),
        "{listed:?}"
    );
    let hit = get(&format!("{url}/v1/errors/1?domain=shop.example.com"), &[]).await;
    assert_eq!(hit.status, 200, "{}", hit.body);
    assert_eq!(hit.json()["error"]["name"], "SHOP_ERROR_CARD_DECLINED");
    let page = get(
        &format!("{url}/errors/SHOP_ERROR_CARD_DECLINED?domain=shop.example.com"),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    let scrape = metrics.encode(false);
    assert!(
        scrape.contains(&format!(
            "errmap_catalog_info{{domain=\"shop.example.com\",hash=\"{hash}\"}} 1"
        )),
        "{scrape}"
    );

    // And back: the shop is gone again, from the metrics too.
    live.store(errmap::Catalogs::default());
    assert_eq!(
        get(&format!("{url}/v1/errors/1?domain=shop.example.com"), &[])
            .await
            .status,
        404
    );
    // The calls counted under its domain stay; the catalog is gone.
    let scrape = metrics.encode(false);
    assert!(
        !scrape.contains("errmap_catalog_info{domain=\"shop.example.com\""),
        "{scrape}"
    );
    assert!(scrape.contains("errmap_catalog_info{domain=\"auth.errmap.dev\""));
    server.stop().await;
}
