//! One unary gRPC call sent through the server's own layers, for the parts
//! that answer other protocols on the gRPC port (the HTTP API, Connect):
//! the request they build becomes a gRPC call, so admission, auth, the
//! response layer and metrics apply to it as to any other.

use bytes::{Buf as _, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt as _;
use tonic::{Code, Status};
use tower::{Service, ServiceExt as _};

use errmap::ErrorCode;

/// The answer of a call that succeeded: its headers, its one message and
/// its trailers.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) message: Bytes,
    pub(crate) trailers: HeaderMap,
}

/// A unary gRPC request for `path` carrying `message`, framed, over
/// HTTP/2 semantics, with gRPC's content type and `te: trailers`; the
/// caller adds its metadata.
pub(crate) fn request(path: http::Uri, message: &[u8]) -> http::Request<tonic::body::Body> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(
        framed.freeze(),
    )));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = path;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    request
}

/// Sends `request` through `grpc` and reads the answer: the status of a
/// failure (from the headers of a trailers-only answer, or from the
/// trailers), or the message. An answer that is no well-formed unary
/// answer is 42.
pub(crate) async fn call<S, B>(
    grpc: S,
    request: http::Request<tonic::body::Body>,
) -> Result<Answer, Status>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = Bytes>,
{
    let unavailable = || Status::from(ErrorCode::ApiInternalServerError);
    let response = grpc.oneshot(request).await.map_err(|_| unavailable())?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    let collected = body.collect().await.map_err(|_| unavailable())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut data = collected.to_bytes();
    if let Some(status) = Status::from_header_map(&trailers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    if data.len() < 5 || data[0] != 0 {
        return Err(unavailable());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.advance(5);
    if data.len() < len {
        return Err(unavailable());
    }
    Ok(Answer {
        headers: parts.headers,
        message: data.split_to(len),
        trailers,
    })
}
