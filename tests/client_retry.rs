//! Issue 17's client retry layer against a real server: it waits the
//! server's delay, gives up at the deadline, stops when throttled, and
//! never retries what the catalog does not mark.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt as _,
};
use errmap_client::{Attempts, RetryLayer, RetryPolicy, PREVIOUS_ATTEMPTS};
use errmap_server::server::ServerConfig;
use tonic::{transport::Channel, Request};

fn client(
    channel: Channel,
    policy: RetryPolicy,
) -> ErrorCatalogClient<errmap_client::Retry<Channel>> {
    ErrorCatalogClient::new(
        tower::ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .service(channel),
    )
}

fn get(code: i32) -> GetErrorRequest {
    GetErrorRequest {
        key: Some(Key::Code(code)),
        domain: None,
    }
}

fn previous(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(PREVIOUS_ATTEMPTS)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn one_place_server() -> TestServer {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    TestServer::start(config).await
}

#[tokio::test]
async fn a_shed_call_waits_the_retry_info_delay_then_succeeds() {
    let server = one_place_server().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 400, 1).await;
    let mut client = client(channel.clone(), RetryPolicy::default());
    let started = Instant::now();
    let response = client.get_error(get(11)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(
        response.into_inner().error.unwrap().name,
        "AUTH_EXPIRED_TOKEN"
    );
    // 44's RetryInfo says 1 s: the retry came no sooner.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_shorter_than_the_delay_gives_up_at_once() {
    let server = one_place_server().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 1500, 1).await;
    let mut client = client(channel.clone(), RetryPolicy::default());
    let mut request = Request::new(get(11));
    request.set_timeout(Duration::from_millis(500));
    let status = client.get_error(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        previous(&status).as_deref(),
        Some("0"),
        "one attempt, no retry"
    );
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn a_draining_server_gives_49_until_the_attempts_run_out() {
    let mut server = one_place_server().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 1500, 1).await;
    server.begin_shutdown();
    let policy = RetryPolicy::default()
        .with_max_attempts(3)
        .with_max_server_delay(Duration::from_millis(20));
    let mut client = client(channel.clone(), policy);
    // Wait for the drain to begin.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = client.get_error(get(11)).await;
        match status {
            Err(s) if s.error_code() == Some(ErrorCode::ApiTryAgainLater) => break s,
            _ => {
                assert!(Instant::now() < deadline, "no 49 while draining");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(
        previous(&status).as_deref(),
        Some("2"),
        "three attempts in all"
    );
    for call in slow {
        let _ = call.await;
    }
    server.join().await.unwrap();
}

#[tokio::test]
async fn throttling_stops_retries_against_a_server_that_always_sheds() {
    let server = one_place_server().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 3000, 1).await;
    let policy = RetryPolicy::default()
        .with_max_attempts(5)
        .with_max_server_delay(Duration::from_millis(1));
    let mut client = client(channel.clone(), policy);
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let status = client.get_error(get(11)).await.unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiTooManyRequests));
        attempts.push(previous(&status).unwrap().parse::<u32>().unwrap() + 1);
    }
    // The bucket (10 tokens) allows retries while more than half is left.
    assert!(attempts[0] > 1, "{attempts:?}");
    assert_eq!(attempts.last(), Some(&1), "{attempts:?}");
    assert!(attempts.iter().sum::<u32>() < 6 * 5, "{attempts:?}");
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn a_code_that_asks_for_no_retry_is_never_retried() {
    let server = TestServer::start_default().await;
    let mut client = client(server.channel().await, RetryPolicy::default());
    let status = client.get_error(get(48)).await.unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    assert_eq!(previous(&status).as_deref(), Some("0"));
    server.stop().await;
}

#[tokio::test]
async fn the_server_sees_the_attempt_count() {
    let server = one_place_server().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 300, 1).await;
    let retrying = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default()))
        .service(channel.clone());
    let mut grpc = tonic::client::Grpc::new(retrying);
    grpc.ready().await.unwrap();
    let response = grpc
        .unary(
            Request::new(String::new()),
            http::uri::PathAndQuery::from_static("/test.v1.Probe/Attempts"),
            tonic_prost::ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap();
    // The first attempt was shed; the handler ran for the second.
    assert_eq!(response.get_ref(), "1");
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    for call in slow {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}
