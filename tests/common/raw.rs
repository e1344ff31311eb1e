//! A raw HTTP/2 client, to send what no well-behaved gRPC client sends.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use errmap::{
    details::status_from_header_map,
    pb::{get_error_request::Key, GetErrorRequest},
};
use http::{HeaderMap, HeaderValue};
use prost::Message as _;
use tokio::net::TcpStream;

pub struct RawReply {
    pub http_status: http::StatusCode,
    pub headers: HeaderMap,
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl RawReply {
    /// The gRPC status, from the headers (trailers-only) or the trailers.
    pub fn status(&self) -> Option<tonic::Status> {
        if self.headers.contains_key("grpc-status") {
            return status_from_header_map(&self.headers).unwrap();
        }
        status_from_header_map(self.trailers.as_ref()?).unwrap()
    }
}

pub async fn h2_connect(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub fn grpc_frame(message: &[u8], compressed: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(u8::from(compressed));
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

pub fn get_error_body(code: i32) -> Bytes {
    grpc_frame(
        &GetErrorRequest {
            key: Some(Key::Code(code)),
            domain: None,
        }
        .encode_to_vec(),
        false,
    )
}

pub async fn raw_call(
    client: &h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, HeaderValue)],
    body: Bytes,
) -> Result<RawReply, h2::Error> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.clone(),
        );
    }
    let mut client = client.clone().ready().await?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(body, true)?;
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("a response within 10 s")?;
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok(RawReply {
        http_status: parts.status,
        headers: parts.headers,
        data: data.freeze(),
        trailers,
    })
}
