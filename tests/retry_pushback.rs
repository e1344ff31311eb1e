//! Issue 17, first part: every status that carries `RetryInfo` also
//! carries `grpc-retry-pushback-ms` (gRFC A6) with the same delay, from the
//! builder, the response layer and admission alike; the others carry none.

mod common;

use std::time::Duration;

use common::{call_probe, TestServer};
use errmap::status::RETRY_PUSHBACK_MS;
use errmap::{Catalog as _, ErrorCode, ErrorStatusExt as _};
use errmap_server::server::ServerConfig;
use tonic::{Request, Status};

fn pushback(status: &Status) -> Vec<String> {
    status
        .metadata()
        .get_all(RETRY_PUSHBACK_MS)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn want(code: ErrorCode) -> Vec<String> {
    code.entry()
        .retry_delay()
        .map(|d| vec![d.as_millis().to_string()])
        .unwrap_or_default()
}

#[test]
fn every_status_with_retry_info_carries_the_pushback() {
    let mut with_delay = 0;
    for code in ErrorCode::all() {
        for status in [
            code.to_status(),
            code.to_status_for("ru"),
            code.builder().message("m").build().unwrap(),
            code.builder().metadata("k1", "v").build().unwrap(),
        ] {
            assert_eq!(pushback(&status), want(code), "{code}");
            let delay = status.error_details().unwrap().retry_delay();
            assert_eq!(delay.is_some(), !pushback(&status).is_empty(), "{code}");
        }
        with_delay += usize::from(code.entry().retry_delay().is_some());
    }
    assert_eq!(with_delay, 3, "42, 44 and 49 ask for a retry");
}

#[tokio::test]
async fn admission_and_the_layer_send_it_too() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    let mut server = TestServer::start(config).await;
    let channel = server.channel().await;

    // A shed call: 44 from admission.
    let slow = server.start_slow(&channel, 1000, 1).await;
    let shed = call_probe(channel.clone(), "Echo", Request::new("x".into()))
        .await
        .unwrap_err();
    assert_eq!(shed.error_code(), Some(ErrorCode::ApiTooManyRequests));
    assert_eq!(pushback(&shed), ["1000"]);
    for call in slow {
        call.await.unwrap().unwrap();
    }

    // A handler's bare UNAVAILABLE with a pushback of its own: rewritten to
    // 49, with the catalog's delay only.
    let mut own = Status::unavailable("backend down");
    own.metadata_mut()
        .insert(RETRY_PUSHBACK_MS, "0".parse().unwrap());
    *server.probe.next.lock().unwrap() = Some(own);
    let status = call_probe(channel.clone(), "Return", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiTryAgainLater));
    assert_eq!(pushback(&status), ["5000"]);

    // A catalog status built elsewhere, without the trailer: the layer adds it.
    let bare = ErrorCode::ApiTryAgainLater.to_status();
    let stripped =
        Status::with_details(bare.code(), bare.message(), bare.details().to_vec().into());
    assert!(pushback(&stripped).is_empty());
    *server.probe.next.lock().unwrap() = Some(stripped);
    let status = call_probe(channel.clone(), "Return", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(pushback(&status), ["5000"]);

    // A status that asks for no retry carries nothing.
    let status = call_probe(channel.clone(), "Plain", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    assert!(pushback(&status).is_empty());

    // A panic: 42, with its 3 s.
    let status = call_probe(channel.clone(), "Panic", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(pushback(&status), ["3000"]);

    // While draining: 49 and 5 s, equal to the RetryInfo.
    let slow = server.start_slow(&channel, 800, 1).await;
    server.begin_shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = call_probe(channel.clone(), "Echo", Request::new("x".into())).await;
        match status {
            Err(s) if s.error_code() == Some(ErrorCode::ApiTryAgainLater) => break s,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no 49 while draining"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(pushback(&status), ["5000"]);
    assert_eq!(
        status.error_details().unwrap().retry_delay(),
        Some(Duration::from_secs(5))
    );
    for call in slow {
        let _ = call.await;
    }
    server.join().await.unwrap();
}
