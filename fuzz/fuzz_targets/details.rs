//! Fuzzes everything that reads a status from a peer: the details decoder,
//! the extension trait and the header reader. None of it may panic, and the
//! readers must all agree, both when they find a code and when none does.
//!
//! `cargo fuzz run details` (cargo-fuzz; on a stable toolchain set
//! `RUSTC_BOOTSTRAP=1`).

#![no_main]

use errmap::{details::status_from_header_map, ErrorCode, ErrorDetails, ErrorStatusExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let status = tonic::Status::with_details(
        tonic::Code::Unknown,
        "m",
        bytes::Bytes::copy_from_slice(data),
    );
    let fast = status.error_code::<ErrorCode>();
    assert_eq!(fast, status.check_error_code::<ErrorCode>().ok());
    if let Some((code, info)) = status.error_info::<ErrorCode>() {
        assert_eq!(Some(code), fast);
        let (view_code, view) = status.error_info_view::<ErrorCode>().expect("the view reads what error_info read");
        assert_eq!(view_code, code);
        assert_eq!(view.to_error_info(), info);
    }
    assert_eq!(status.error_info_view::<ErrorCode>().map(|(c, _)| c), fast);
    // One strict reader: the full decoder finds exactly what the fast one
    // does, and nothing when it finds nothing.
    assert_eq!(status.error_details().and_then(|d| d.error_code::<ErrorCode>()), fast);
    if let Ok(details) = ErrorDetails::decode(data) {
        let _ = details.retry_delay();
    }
    let _ = status.check_error_details();

    // The same bytes as a header value: base64 or not.
    let _ = ErrorDetails::from_header_value(data);
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("2"));
        headers.insert("grpc-status-details-bin", value);
        if let Ok(Some(status)) = status_from_header_map(&headers) {
            let _ = status.error_details();
        }
    }
});
