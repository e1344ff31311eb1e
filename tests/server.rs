//! The lookup service, health and reflection on a real server at
//! 127.0.0.1:0, called by real tonic clients.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{call_probe, TestServer};
use errmap::Catalog as _;
use errmap::{
    pb::{
        error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest,
        ListErrorsRequest,
    },
    ErrorCode, ErrorStatusExt, DOMAIN,
};
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

#[tokio::test]
async fn get_error_by_code_and_by_name_for_every_entry() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);
    for entry in ErrorCode::table().entries() {
        for key in [
            Key::Code(entry.number()),
            Key::Name(entry.name().to_owned()),
        ] {
            let response = client
                .get_error(GetErrorRequest {
                    key: Some(key.clone()),
                    domain: None,
                })
                .await
                .unwrap_or_else(|s| panic!("{key:?}: {s:?}"))
                .into_inner();
            let d = response.error.expect("an entry");
            assert_eq!(d.code, Some(entry.number()), "{key:?}");
            assert_eq!(d.name, entry.name());
            assert_eq!(d.message, entry.message());
            assert_eq!(d.category, entry.category());
            assert_eq!(d.grpc_code, entry.grpc_code() as i32);
            assert_eq!(
                d.grpc_code_name,
                errmap_server::service::grpc_code_name(entry.grpc_code())
            );
            assert_eq!(d.http_status, i32::from(entry.http_status()));
            assert_eq!(d.domain, DOMAIN);
            let delay = d
                .retry_delay
                .map(|d| Duration::new(d.seconds as u64, d.nanos as u32));
            assert_eq!(delay, entry.retry_delay());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn code_zero_is_present_on_the_wire() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);
    let d = client
        .get_error(GetErrorRequest {
            key: Some(Key::Code(0)),
            domain: None,
        })
        .await
        .unwrap()
        .into_inner()
        .error
        .unwrap();
    assert_eq!(d.code, Some(0));
    assert_eq!(d.name, "AUTH_USERNAME_TAKEN");
    // Explicit presence: the encoded descriptor carries field 1 even for 0.
    assert_eq!(d.encode_to_vec()[..2], [0x08, 0x00]);
    server.stop().await;
}

#[tokio::test]
async fn list_errors_with_and_without_filter() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);
    let all = client
        .list_errors(ListErrorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .errors;
    let codes: Vec<_> = all.iter().map(|d| d.code.unwrap()).collect();
    let expected: Vec<_> = ErrorCode::table()
        .entries()
        .iter()
        .map(|e| e.number())
        .collect();
    assert_eq!(codes, expected);

    for category in ErrorCode::table().categories() {
        let some = client
            .list_errors(ListErrorsRequest {
                category: category.to_owned(),
                domain: None,
            })
            .await
            .unwrap()
            .into_inner()
            .errors;
        let expected: Vec<_> = ErrorCode::table()
            .entries()
            .iter()
            .filter(|e| e.category() == category)
            .map(|e| e.name())
            .collect();
        let names: Vec<_> = some.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, expected, "{category}");
        assert!(!names.is_empty());
    }
    server.stop().await;
}

fn violation_fields(status: &tonic::Status) -> Vec<String> {
    status
        .error_details()
        .and_then(|d| d.bad_request().cloned())
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn service_errors_are_catalog_errors() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);

    // No key.
    let status = client
        .get_error(GetErrorRequest {
            key: None,
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
    assert_eq!(violation_fields(&status), ["key"]);

    // Empty name.
    let status = client
        .get_error(GetErrorRequest {
            key: Some(Key::Name(String::new())),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
    assert_eq!(violation_fields(&status), ["name"]);

    // Unknown code.
    let status = client
        .get_error(GetErrorRequest {
            key: Some(Key::Code(48)),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    let details = status.check_error_details().unwrap();
    assert_eq!(details.metadata("requestedCode"), Some("48"));
    assert_eq!(details.metadata("code"), Some("47"));

    // Unknown name, lowercase names included.
    for name in ["NOPE", "auth_required"] {
        let status = client
            .get_error(GetErrorRequest {
                key: Some(Key::Name(name.to_owned())),
                domain: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.error_code(),
            Some(ErrorCode::ApiItemNotFound),
            "{name}"
        );
        let details = status.check_error_details().unwrap();
        assert_eq!(details.metadata("requestedName"), Some(name));
    }

    // A huge name is echoed cut short, and the status stays small.
    let status = client
        .get_error(GetErrorRequest {
            key: Some(Key::Name("X".repeat(20_000))),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    let echoed = status
        .error_details()
        .unwrap()
        .metadata("requestedName")
        .unwrap()
        .to_owned();
    assert!(echoed.len() < 200, "{}", echoed.len());

    // Unknown category.
    let status = client
        .list_errors(ListErrorsRequest {
            category: "nope".into(),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
    assert_eq!(violation_fields(&status), ["category"]);
    server.stop().await;
}

async fn health_of(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn health_serves_then_reports_not_serving_on_shutdown() {
    let mut server = TestServer::start_default().await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    assert_eq!(
        health_of(&mut health, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health_of(&mut health, "errmap.v1.ErrorCatalog")
            .await
            .unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health_of(&mut health, "no.such.Service")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "errmap.v1.ErrorCatalog".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Keep a call in flight so the server stays up while draining.
    let slow = tokio::spawn(call_probe(
        channel.clone(),
        "Slow",
        Request::new("600".into()),
    ));
    while server.probe.started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    server.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a health update arrives")
        .expect("the watch stream is open")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    slow.await.unwrap().expect("the in-flight call finishes");
    server.join().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_in_flight_call() {
    let mut server = TestServer::start_default().await;
    let channel = server.channel().await;
    let slow = tokio::spawn(call_probe(channel, "Slow", Request::new("400".into())));
    while server.probe.started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    server.begin_shutdown();
    let response = slow.await.unwrap().expect("the in-flight call succeeds");
    assert_eq!(response.into_inner(), "400");
    assert_eq!(server.probe.finished.load(Ordering::SeqCst), 1);
    server.join().await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let mut config = errmap_server::server::ServerConfig::default();
    config.grace_period = Duration::from_millis(200);
    let mut server = TestServer::start(config).await;
    let channel = server.channel().await;
    let slow = tokio::spawn(call_probe(channel, "Slow", Request::new("30000".into())));
    while server.probe.started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let probe = server.probe.clone();
    let begun = std::time::Instant::now();
    server.begin_shutdown();
    server.join().await.unwrap();
    // The handler runs 30 s; the server returned once the grace period was
    // over, without waiting for it.
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    slow.abort();
}

mod reflection {
    use super::*;
    use prost_reflect::DescriptorPool;
    use tonic_reflection::pb::{v1, v1alpha};

    const EXPECTED_SERVICES: [&str; 5] = [
        "errmap.v1.ErrorCatalog",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "test.v1.Probe",
    ];

    #[tokio::test]
    async fn v1_lists_services_and_resolves_the_catalog_enum_with_its_options() {
        let server = TestServer::start_default().await;
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
        let requests = tokio_stream::iter([
            v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
            },
            v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "errmap.v1.ErrorCode".into(),
                    ),
                ),
            },
            v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "google.rpc.ErrorInfo".into(),
                    ),
                ),
            },
            v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1::server_reflection_request::MessageRequest::FileByFilename(
                        "errmap/v1/options.proto".into(),
                    ),
                ),
            },
        ]);
        let mut responses = client
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();

        // 1. Services.
        let listed = match responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => list,
            other => panic!("{other:?}"),
        };
        let mut names: Vec<_> = listed.service.into_iter().map(|s| s.name).collect();
        names.sort();
        // The probe is not in any registered descriptor, so reflection cannot list it.
        let expected: Vec<String> = EXPECTED_SERVICES
            .iter()
            .filter(|s| !s.starts_with("test."))
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, expected);

        // 2. The catalog enum, with its custom options readable.
        let files = match responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => f,
            other => panic!("{other:?}"),
        };
        // Reflection sends the file and, as needed, its imports. Decode the
        // served bytes as they are (so extension options survive), with any
        // import not sent taken from the public google.protobuf set.
        let served: Vec<String> = files
            .file_descriptor_proto
            .iter()
            .map(|raw| {
                prost_types::FileDescriptorProto::decode(raw.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert!(
            served.contains(&"errmap/v1/error_code.proto".to_owned()),
            "{served:?}"
        );
        // Like any reflection client, fetch the import that defines the options.
        let rpc_files = responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap();
        let options_file = match responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => f,
            other => panic!("{other:?}"),
        };
        let mut bytes = Vec::new();
        for raw in options_file
            .file_descriptor_proto
            .iter()
            .chain(&files.file_descriptor_proto)
        {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut bytes);
            prost::encoding::encode_varint(raw.len() as u64, &mut bytes);
            bytes.extend_from_slice(raw);
        }
        let mut pool = DescriptorPool::global();
        pool.decode_file_descriptor_set(bytes.as_slice()).unwrap();
        let code_enum = pool
            .get_enum_by_name("errmap.v1.ErrorCode")
            .expect("enum resolved");
        let expired = code_enum.get_value_by_name("AUTH_EXPIRED_TOKEN").unwrap();
        assert_eq!(expired.number(), 11);
        let error_ext = pool.get_extension_by_name("errmap.v1.error").unwrap();
        let options = expired.options();
        assert!(
            options.has_extension(&error_ext),
            "custom option kept on the wire"
        );
        let spec = options.get_extension(&error_ext);
        let spec = spec.as_message().unwrap();
        assert_eq!(
            spec.get_field_by_name("grpc_code").unwrap().as_str(),
            Some("UNAUTHENTICATED")
        );
        assert_eq!(
            spec.get_field_by_name("http_status").unwrap().as_i32(),
            Some(400)
        );
        let domain_ext = pool.get_extension_by_name("errmap.v1.domain").unwrap();
        assert_eq!(
            code_enum.options().get_extension(&domain_ext).as_str(),
            Some(DOMAIN)
        );

        // 3. The google.rpc detail types resolve, so a reflection client can
        // decode our error details.
        match rpc_files {
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => {
                let names: Vec<_> = f
                    .file_descriptor_proto
                    .iter()
                    .map(|raw| {
                        prost_types::FileDescriptorProto::decode(raw.as_slice())
                            .unwrap()
                            .name()
                            .to_owned()
                    })
                    .collect();
                assert!(
                    names.iter().any(|n| n.ends_with("error_details.proto")),
                    "{names:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn v1alpha_lists_services() {
        let server = TestServer::start_default().await;
        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
        let requests = tokio_stream::iter([v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }]);
        let mut responses = client
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();
        let listed = match responses
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
                list
            }
            other => panic!("{other:?}"),
        };
        let names: Vec<_> = listed.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"errmap.v1.ErrorCatalog".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        server.stop().await;
    }
}
