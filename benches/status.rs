//! The hot paths, each beside what a user would write without errmap
//! (tonic-types' own API with the same content), so every report is a
//! ratio measured in one run.
//!
//! `cargo bench --bench status`

use std::{collections::HashMap, future::Future as _, hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use errmap::Catalog as _;
use errmap::{ErrorCode, ErrorStatusExt, DOMAIN};
use http::HeaderMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const CODE: ErrorCode = ErrorCode::ApiTooManyRequests;

/// tonic-types' way to the same status as `CODE.to_status()`.
fn tonic_types_bare() -> Status {
    let mut details = ErrorDetails::with_error_info(
        CODE.entry().name(),
        DOMAIN,
        HashMap::from([("code".to_owned(), CODE.entry().number().to_string())]),
    );
    details.set_localized_message("en-US", CODE.entry().message());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(CODE.entry().grpc_code(), CODE.entry().message(), details)
}

/// tonic-types' way to a status with one metadata entry and a developer
/// message.
fn tonic_types_rich(user: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(
        CODE.entry().name(),
        DOMAIN,
        HashMap::from([
            ("code".to_owned(), CODE.entry().number().to_string()),
            ("userId".to_owned(), user.to_owned()),
        ]),
    );
    details.set_localized_message("en-US", CODE.entry().message());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        CODE.entry().grpc_code(),
        format!("user {user} is over quota"),
        details,
    )
}

fn errmap_rich(user: &str) -> Status {
    CODE.builder()
        .message(format!("user {user} is over quota"))
        .metadata("userId", user.to_owned())
        .build()
        .unwrap()
}

/// The status as a client receives it: through headers.
fn received(status: &Status) -> Status {
    let mut headers = HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    Status::from_header_map(&headers).unwrap()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build_bare");
    group.bench_function("errmap", |b| b.iter(|| black_box(CODE).to_status()));
    group.bench_function("tonic_types", |b| b.iter(tonic_types_bare));
    // A code that asks for no retry: no grpc-retry-pushback-ms metadata.
    group.bench_function("errmap_no_retry", |b| {
        b.iter(|| black_box(ErrorCode::ApiItemNotFound).to_status())
    });
    group.finish();

    let mut group = c.benchmark_group("build_metadata_and_message");
    group.bench_function("errmap", |b| b.iter(|| errmap_rich(black_box("u-42"))));
    group.bench_function("tonic_types", |b| {
        b.iter(|| tonic_types_rich(black_box("u-42")))
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let status = received(&errmap_rich("u-42"));
    let mut group = c.benchmark_group("read_code_and_error_info");
    group.bench_function("errmap", |b| {
        b.iter(|| {
            let s = black_box(&status);
            let (code, info) = s.error_info::<ErrorCode>().unwrap();
            black_box((code, info))
        })
    });
    group.bench_function("tonic_types", |b| {
        b.iter(|| {
            let s = black_box(&status);
            let info = s.get_details_error_info().unwrap();
            let code = (info.domain == DOMAIN)
                .then(|| ErrorCode::from_name(&info.reason))
                .flatten()
                .unwrap();
            black_box((code, info))
        })
    });
    group.bench_function("errmap_view", |b| {
        b.iter(|| {
            let s = black_box(&status);
            let (code, info) = s.error_info_view::<ErrorCode>().unwrap();
            black_box((code, info.reason(), info.get("userId")))
        })
    });
    group.bench_function("errmap_code_only", |b| {
        b.iter(|| black_box(&status).error_code::<ErrorCode>().unwrap())
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.bench_function("by_number", |b| {
        b.iter(|| ErrorCode::from_code(black_box(62)).unwrap())
    });
    group.bench_function("by_name", |b| {
        b.iter(|| ErrorCode::from_name(black_box("OAUTH_CLIENT_REDIRECT_URI_MISMATCH")).unwrap())
    });
    group.bench_function("by_name_miss", |b| {
        b.iter(|| ErrorCode::from_name(black_box("OAUTH_CLIENT_REDIRECT_URI_MISMATCHED")))
    });
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.bench_function("errmap", |b| {
        b.iter(|| {
            let status = black_box(CODE).to_status();
            let mut headers = HeaderMap::new();
            status.add_header(&mut headers).unwrap();
            let back = Status::from_header_map(&headers).unwrap();
            back.error_code::<ErrorCode>().unwrap()
        })
    });
    group.bench_function("tonic_types", |b| {
        b.iter(|| {
            let status = tonic_types_bare();
            let mut headers = HeaderMap::new();
            status.add_header(&mut headers).unwrap();
            let back = Status::from_header_map(&headers).unwrap();
            let info = back.get_details_error_info().unwrap();
            ErrorCode::from_name(&info.reason).unwrap()
        })
    });
    group.finish();
    let _ = Code::Ok;
}

/// The shop example's catalog, loaded at run time from a descriptor set
/// compiled here, as `errmap serve --catalog` loads one.
fn runtime_table() -> errmap::CatalogTable {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([
        format!("{root}/examples/shop/proto"),
        format!("{root}/proto"),
    ])
    .unwrap();
    compiler.include_imports(true);
    compiler.open_file("shop/v1/shop.proto").unwrap();
    errmap::catalog_set::load_descriptor_set(&compiler.encode_file_descriptor_set(), "shop")
        .unwrap()
        .remove(0)
}

fn runtime_catalog(c: &mut Criterion) {
    let table = &runtime_table();
    let mut group = c.benchmark_group("runtime_lookup");
    group.bench_function("by_number", |b| {
        b.iter(|| table.by_number(black_box(4)).unwrap())
    });
    group.bench_function("by_name", |b| {
        b.iter(|| {
            table
                .by_name(black_box("SHOP_ERROR_PAYMENT_PROVIDER_DOWN"))
                .unwrap()
        })
    });
    group.finish();

    // Building a bare status: a compiled enum against a runtime table's
    // entry, both from pre-encoded bytes.
    let mut group = c.benchmark_group("build_runtime_vs_compiled");
    let entry = table.by_number(4).unwrap();
    group.bench_function("compiled", |b| {
        b.iter(|| Status::from(black_box(ErrorCode::ApiTryAgainLater)))
    });
    group.bench_function("runtime", |b| b.iter(|| table.status_of(black_box(entry))));
    group.finish();

    // The name index: the perfect hash against the simple alternative, a
    // std HashMap from name to index (SipHash), on the default catalog.
    let mut group = c.benchmark_group("name_index");
    let names = ErrorCode::table();
    let map: std::collections::HashMap<&str, usize> = names
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name(), i))
        .collect();
    let name = "OAUTH_CLIENT_REDIRECT_URI_MISMATCH";
    group.bench_function("perfect_hash", |b| {
        b.iter(|| names.index_of_name(black_box(name).as_bytes()).unwrap())
    });
    group.bench_function("std_hashmap", |b| {
        b.iter(|| *map.get(black_box(name)).unwrap())
    });
    group.finish();
}

/// What a Russian-first browser sends.
const BROWSER_RU: &str = "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7";

fn metadata(accept_language: &str) -> tonic::metadata::MetadataMap {
    let mut m = tonic::metadata::MetadataMap::new();
    m.insert("accept-language", accept_language.parse().unwrap());
    m
}

fn locales(c: &mut Criterion) {
    let table = ErrorCode::table();
    // Negotiation alone.
    let mut group = c.benchmark_group("negotiate");
    let long = vec!["de-DE;q=0.5"; 80].join(",");
    for (name, header) in [
        ("browser_ru", BROWSER_RU),
        ("second_choice", "fr-CH, ru;q=0.5"),
        ("no_match", "de-DE,de;q=0.9,fr;q=0.8,it;q=0.7"),
        ("hostile_q", "*;q=abc"),
        ("many_members", long.as_str()),
        ("over_the_limit", &",".repeat(8 * 1024)),
    ] {
        group.bench_function(name, |b| b.iter(|| table.negotiate(black_box(header))));
    }
    group.finish();

    // A bare status: today's en-US build, against one negotiated from the
    // request metadata (negotiation included).
    let russian = metadata(BROWSER_RU);
    let mut group = c.benchmark_group("build_bare_in_locale");
    group.bench_function("en_us", |b| b.iter(|| black_box(CODE).to_status()));
    group.bench_function("negotiated_ru", |b| {
        b.iter(|| black_box(CODE).to_status_for(black_box(&russian)))
    });
    // The locale negotiated once per request, then used for the status.
    let negotiated = table.negotiate(&russian);
    group.bench_function("ru_negotiated_before", |b| {
        b.iter(|| black_box(CODE).to_status_for(black_box(negotiated)))
    });
    group.finish();

    // The builder with caller data, with and without a locale.
    let mut group = c.benchmark_group("build_metadata_and_message_in_locale");
    group.bench_function("en_us", |b| b.iter(|| errmap_rich(black_box("u-42"))));
    group.bench_function("negotiated_ru", |b| {
        b.iter(|| {
            CODE.builder()
                .locale(black_box(&russian))
                .message(format!("user {} is over quota", black_box("u-42")))
                .metadata("userId", "u-42".to_owned())
                .build()
                .unwrap()
        })
    });
    group.finish();

    // The response layer on the OK path, with and without an
    // accept-language header: the header is kept, never negotiated.
    let mut group = c.benchmark_group("layer_ok_path");
    for (name, header) in [("without_header", None), ("with_header", Some(BROWSER_RU))] {
        let mut service = tower::Layer::layer(
            &errmap_server::layer::ErrorLayer::new(),
            tower::service_fn(|_: http::Request<()>| {
                let mut response =
                    http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                response.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                std::future::ready(Ok::<_, std::convert::Infallible>(response))
            }),
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut request = http::Request::new(());
                    if let Some(value) = header {
                        request
                            .headers_mut()
                            .insert("accept-language", http::HeaderValue::from_static(value));
                    }
                    request
                },
                |request| {
                    let mut future = tower::Service::call(&mut service, request);
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    match std::pin::Pin::new(&mut future).poll(&mut cx) {
                        std::task::Poll::Ready(Ok(response)) => black_box(response),
                        _ => unreachable!("a ready service answers at once"),
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Polls a future once; the pages and the mapping never wait.
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("a page is rendered without waiting"),
    }
}

fn http(c: &mut Criterion) {
    // Rendering the catalog pages (askama), as the server answers them.
    let api = errmap_server::http_api::HttpApi::new(
        errmap::catalog_set::Catalogs::default(),
        errmap_server::http_error::HttpErrors::default(),
    );
    let grpc = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    });
    let mut group = c.benchmark_group("pages");
    for (name, uri, lang) in [
        ("index", "/", None),
        ("index_filtered", "/?category=oauth&q=client", None),
        ("error_page", "/errors/API_TOO_MANY_REQUESTS", None),
        ("error_page_ru", "/errors/API_TOO_MANY_REQUESTS", Some("ru")),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut request = http::Request::get(uri)
                    .body(tonic::body::Body::empty())
                    .unwrap();
                if let Some(lang) = lang {
                    request
                        .headers_mut()
                        .insert("accept-language", http::HeaderValue::from_static(lang));
                }
                black_box(ready(api.call(grpc, request)))
            })
        });
    }
    group.finish();

    // A status as an HTTP error, in each shape.
    let errors = errmap_server::http_error::HttpErrors::default();
    let status = ErrorCode::ApiTooManyRequests.to_status();
    let mut group = c.benchmark_group("http_error");
    for (name, shape) in [
        ("legacy", errmap_server::http_error::Shape::Legacy),
        ("google", errmap_server::http_error::Shape::Google),
        ("problem", errmap_server::http_error::Shape::Problem),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| errors.response(black_box(&status), shape))
        });
    }
    group.finish();
}

/// A transport that answers every call with one OK `HealthCheckResponse`
/// (headers, a data frame, trailers), after reading the whole request as a
/// real one sends it. Both clients below pay the same for it.
fn answering_transport() -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
    > + Send,
> + Clone
       + Send
       + 'static {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let message = tonic_health::pb::HealthCheckResponse { status: 1 }.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let frame = bytes::Bytes::from(frame);
    tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let frame = frame.clone();
        async move {
            let _ = request.into_body().collect().await;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = vec![
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame)),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let mut response = http::Response::new(tonic::body::Body::new(
                http_body_util::StreamBody::new(tokio_stream::iter(frames)),
            ));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        }
    })
}

/// A unary call that succeeds at once, through tonic's client over the
/// transport above, bare and behind `errmap_client::RetryLayer`: what the
/// layer adds to every call (buffering the request, the attempt header,
/// the throttle), without a network to hide it.
fn client(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut bare = tonic_health::pb::health_client::HealthClient::new(answering_transport());
    let mut retrying = tonic_health::pb::health_client::HealthClient::new(tower::Layer::layer(
        &errmap_client::RetryLayer::new(errmap_client::RetryPolicy::default()),
        answering_transport(),
    ));
    let mut group = c.benchmark_group("client_first_try_ok");
    group.bench_function("bare", |b| {
        b.iter(|| {
            runtime
                .block_on(bare.check(tonic_health::pb::HealthCheckRequest::default()))
                .unwrap()
        })
    });
    group.bench_function("retry_layer", |b| {
        b.iter(|| {
            runtime
                .block_on(retrying.check(tonic_health::pb::HealthCheckRequest::default()))
                .unwrap()
        })
    });
    group.finish();
}

/// Templates (issue 25): a templated status with two arguments against a
/// plain one built with the same metadata, and the runtime lookups on a
/// table that a reload brought, beside those on the first one.
fn templates(c: &mut Criterion) {
    let first = errmap::TableRef::from(runtime_table());
    let templated = first.by_number(6).expect("the shop's QUANTITY_OVER_LIMIT");
    let plain = first.by_number(5).expect("the shop's QUANTITY_INVALID");
    assert!(templated.is_template() && !plain.is_template());
    let mut group = c.benchmark_group("template");
    group.bench_function("plain_same_metadata", |b| {
        b.iter(|| {
            first
                .builder_of(plain)
                .metadata("quantity", black_box(12).to_string())
                .metadata("limit", black_box(10).to_string())
                .build()
                .unwrap()
        })
    });
    group.bench_function("filled_two_args", |b| {
        b.iter(|| {
            first
                .builder_of(templated)
                .arg("quantity", black_box(12))
                .arg("limit", black_box(10))
                .build()
                .unwrap()
        })
    });
    group.finish();

    // Ten reloads of the same file: the lookups on the table served after
    // them, through the live set as the server reads it.
    let live = errmap_server::reload::LiveCatalogs::new(
        errmap::Catalogs::default()
            .with(first.clone(), "shop")
            .unwrap(),
    );
    for _ in 0..10 {
        live.store(
            errmap::Catalogs::default()
                .with(runtime_table(), "shop")
                .unwrap(),
        );
    }
    let current = live.load();
    let reloaded = current.by_domain("shop.example.com").unwrap();
    assert!(!reloaded.same(&first));
    let mut group = c.benchmark_group("runtime_lookup");
    group.bench_function("by_number_after_reload", |b| {
        b.iter(|| reloaded.by_number(black_box(4)).unwrap())
    });
    group.bench_function("by_name_after_reload", |b| {
        b.iter(|| {
            reloaded
                .by_name(black_box("SHOP_ERROR_PAYMENT_PROVIDER_DOWN"))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = build, read, lookup, round_trip, runtime_catalog, templates, locales, http, client
}
criterion_main!(benches);
