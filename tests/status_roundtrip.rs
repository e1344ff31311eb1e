//! Every catalog status through real header encoding, read back with
//! errmap's reader and, independently, with tonic-types and plain prost.

use std::collections::HashMap;

use errmap::Catalog;
use errmap::{details::status_from_header_map, BuildError, ErrorCode, ErrorStatusExt, DOMAIN};
use http::HeaderMap;
use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::pb;

const INTEROP_MESSAGE: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

/// Sends `status` through a header map as a server would, and reads it back
/// as a client would.
fn over_the_wire(status: &Status) -> (HeaderMap, Status) {
    let mut headers = HeaderMap::new();
    status.add_header(&mut headers).expect("status encodes");
    let back = Status::from_header_map(&headers).expect("grpc-status present");
    (headers, back)
}

/// The type names of the details, decoded with prost alone.
fn decode_rpc_status(details: &[u8]) -> pb::Status {
    pb::Status::decode(details).expect("details are a google.rpc.Status")
}

fn detail_types(status: &pb::Status) -> Vec<String> {
    status
        .details
        .iter()
        .map(|any| any.type_url.rsplit('/').next().unwrap().to_owned())
        .collect()
}

fn assert_at_most_one_of_each(types: &[String]) {
    for t in types {
        assert_eq!(
            types.iter().filter(|x| *x == t).count(),
            1,
            "{t} repeated in {types:?}"
        );
    }
}

#[test]
fn every_code_round_trips_through_headers() {
    for code in ErrorCode::all() {
        let entry = code.entry();
        let (headers, back) = over_the_wire(&Status::from(code));

        // Headers.
        assert_eq!(
            headers["grpc-status"].to_str().unwrap(),
            (entry.grpc_code() as i32).to_string()
        );
        let b64 = headers["grpc-status-details-bin"].to_str().unwrap();
        assert!(
            !b64.ends_with('='),
            "details must be unpadded base64: {b64}"
        );
        assert_eq!(back.code(), entry.grpc_code());
        assert_eq!(back.message(), entry.message());

        // errmap's reader.
        assert_eq!(back.error_code(), Some(code), "{code}");
        assert_eq!(back.check_error_code(), Ok(code));
        let ours = ErrorStatusExt::check_error_details(&back).expect("details read back");
        assert_eq!(ours.error_code(), Some(code));
        assert_eq!(ours.entry::<ErrorCode>(), Some(entry));
        assert_eq!(ours.metadata("code"), Some(entry.number_str()));
        assert_eq!(ours.retry_delay(), entry.retry_delay());
        assert!(ours.other().is_empty());

        // The details' code and message equal the headers.
        let rpc = decode_rpc_status(back.details());
        assert_eq!(rpc.code, entry.grpc_code() as i32, "{code}");
        assert_eq!(rpc.message, back.message(), "{code}");
        let types = detail_types(&rpc);
        assert_at_most_one_of_each(&types);
        let mut expected = vec!["google.rpc.ErrorInfo", "google.rpc.LocalizedMessage"];
        if entry.retry_delay().is_some() {
            expected.push("google.rpc.RetryInfo");
        }
        assert_eq!(types, expected, "{code}");

        // tonic-types as an independent reader.
        let theirs =
            tonic_types::StatusExt::check_error_details(&back).expect("tonic-types reads it");
        let info = theirs.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, entry.name());
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(
            info.metadata,
            HashMap::from([("code".to_owned(), entry.number().to_string())])
        );
        let localized = theirs.localized_message().expect("LocalizedMessage");
        assert_eq!(localized.locale, "en-US");
        assert_eq!(localized.message, entry.message());
        assert_eq!(
            theirs.retry_info().and_then(|r| r.retry_delay),
            entry.retry_delay(),
            "{code}"
        );
    }
}

#[test]
fn builder_output_round_trips_with_every_detail() {
    let violation = pb::bad_request::FieldViolation {
        field: "password".into(),
        description: "must be 6 to 63 characters long".into(),
        reason: "PASSWORD_TOO_SHORT".into(),
        localized_message: Some(pb::LocalizedMessage {
            locale: "de-DE".into(),
            message: "Das Passwort ist zu kurz.".into(),
        }),
    };
    let status = ErrorCode::AuthPasswordInvalid
        .builder()
        .message(INTEROP_MESSAGE)
        .metadata("minLength", "6")
        .metadata("field", "password")
        .violation(violation.clone())
        .field_violation("username", "too long")
        .help_link("Password rules", "https://example.com/passwords")
        .ascii_metadata("x-request-id", "req-42")
        .binary_metadata("x-trace-bin", [0u8, 159, 255, 1])
        .build()
        .unwrap();

    let (headers, back) = over_the_wire(&status);
    assert_eq!(headers["x-request-id"], "req-42");
    assert!(headers.contains_key("x-trace-bin"));
    assert_eq!(back.message(), INTEROP_MESSAGE);
    assert_eq!(back.code(), Code::InvalidArgument);
    assert_eq!(back.error_code(), Some(ErrorCode::AuthPasswordInvalid));
    assert_eq!(
        back.metadata()
            .get_bin("x-trace-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        [0u8, 159, 255, 1]
    );

    let rpc = decode_rpc_status(back.details());
    assert_eq!(rpc.message, INTEROP_MESSAGE);
    assert_eq!(rpc.code, Code::InvalidArgument as i32);
    let types = detail_types(&rpc);
    assert_at_most_one_of_each(&types);
    assert_eq!(
        types,
        [
            "google.rpc.ErrorInfo",
            "google.rpc.LocalizedMessage",
            "google.rpc.BadRequest",
            "google.rpc.Help"
        ]
    );

    let ours = ErrorStatusExt::check_error_details(&back).unwrap();
    let info = ours.error_info().unwrap();
    assert_eq!(
        info.metadata,
        HashMap::from([
            ("code".to_owned(), "31".to_owned()),
            ("minLength".to_owned(), "6".to_owned()),
            ("field".to_owned(), "password".to_owned()),
        ])
    );
    // The LocalizedMessage keeps the catalog message.
    assert_eq!(
        ours.localized_message().unwrap().message,
        ErrorCode::AuthPasswordInvalid.entry().message()
    );
    let violations = &ours.bad_request().unwrap().field_violations;
    assert_eq!(violations[0], violation, "all four fields kept");
    assert_eq!(violations[1].field, "username");
    assert_eq!(
        ours.help().unwrap().links[0].url,
        "https://example.com/passwords"
    );

    let theirs = tonic_types::StatusExt::check_error_details(&back).unwrap();
    assert_eq!(theirs.error_info().unwrap().reason, "AUTH_PASSWORD_INVALID");
    assert_eq!(theirs.bad_request().unwrap().field_violations.len(), 2);
    assert_eq!(theirs.help().unwrap().links.len(), 1);
}

#[test]
fn a_developer_message_alone_keeps_the_other_details() {
    let status = ErrorCode::ApiTryAgainLater
        .builder()
        .message("draining for deploy")
        .build()
        .unwrap();
    let (_, back) = over_the_wire(&status);
    let details = back.check_error_details().unwrap();
    assert_eq!(details.status_message(), "draining for deploy");
    assert_eq!(details.error_code(), Some(ErrorCode::ApiTryAgainLater));
    assert_eq!(
        details.retry_delay(),
        ErrorCode::ApiTryAgainLater.entry().retry_delay()
    );
}

#[test]
fn setting_a_metadata_key_twice_keeps_the_last_value() {
    let status = ErrorCode::ApiItemNotFound
        .builder()
        .metadata("key", "a")
        .metadata("key", "b")
        .build()
        .unwrap();
    let info = status.error_details().unwrap();
    assert_eq!(info.metadata("key"), Some("b"));
    let rpc = decode_rpc_status(status.details());
    let any = &rpc.details[0];
    let decoded = pb::ErrorInfo::decode(any.value.as_slice()).unwrap();
    assert_eq!(decoded.metadata.len(), 2);
}

#[test]
fn builder_rejects_bad_metadata_keys_with_a_clear_error() {
    for key in [
        "",
        "x",
        "MinLength",
        "min length",
        "1abc",
        "_abc",
        "ünïcode",
        &"k".repeat(65),
    ] {
        let err = ErrorCode::ApiInvalidRequest
            .builder()
            .metadata(key.to_owned(), "v")
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::InvalidMetadataKey {
                key: key.to_owned()
            }
        );
        assert!(err.to_string().contains("lowerCamelCase"), "{err}");
    }
    let err = ErrorCode::ApiInvalidRequest
        .builder()
        .metadata("code", "7")
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ReservedMetadataKey);
    assert!(err.to_string().contains("reserved"));
}

#[test]
fn builder_rejects_bad_response_metadata() {
    let cases: [(&str, bool); 6] = [
        ("grpc-status", false),
        ("X-Upper", false),
        ("trace-bin", false),
        ("trace", true),
        ("bad key", false),
        ("content-type", false),
    ];
    for (key, binary) in cases {
        let builder = ErrorCode::ApiInvalidRequest.builder();
        let builder = if binary {
            builder.binary_metadata(key, b"v")
        } else {
            builder.ascii_metadata(key, "v")
        };
        match builder.build() {
            Err(BuildError::InvalidResponseMetadata { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
    let err = ErrorCode::ApiInvalidRequest
        .builder()
        .ascii_metadata("x-note", "line\nbreak")
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidResponseMetadata { .. }));
}

#[test]
fn builder_refuses_statuses_over_the_trailer_budget() {
    let err = ErrorCode::ApiInvalidRequest
        .builder()
        .metadata("blob", "x".repeat(8 * 1024))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::TooLarge { .. }), "{err:?}");
    // Non-ASCII messages count as percent-encoded.
    let err = ErrorCode::ApiInvalidRequest
        .builder()
        .message("☺".repeat(800))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::TooLarge { .. }), "{err:?}");
}

#[test]
fn the_largest_bare_status_is_small() {
    for code in ErrorCode::all() {
        let mut headers = HeaderMap::new();
        code.to_status().add_header(&mut headers).unwrap();
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        assert!(size < 1024, "{code}: {size} bytes");
    }
}

#[test]
fn a_build_error_becomes_an_internal_catalog_error() {
    let err = ErrorCode::ApiInvalidRequest
        .builder()
        .metadata("code", "1")
        .build()
        .unwrap_err();
    let status = Status::from(err);
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInternalServerError));
}

#[test]
fn padded_and_unpadded_details_headers_both_read() {
    let status = Status::from(ErrorCode::ApiTooManyRequests);
    let mut headers = HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    let unpadded = headers["grpc-status-details-bin"]
        .to_str()
        .unwrap()
        .to_owned();
    let padded = format!("{unpadded}{}", "=".repeat((4 - unpadded.len() % 4) % 4));
    assert_ne!(
        padded, unpadded,
        "this status must need padding for the test to mean something"
    );
    for value in [&unpadded, &padded] {
        let details = errmap::ErrorDetails::from_header_value(value.as_bytes()).unwrap();
        assert_eq!(details.error_code(), Some(ErrorCode::ApiTooManyRequests));
        headers.insert("grpc-status-details-bin", value.parse().unwrap());
        let back = status_from_header_map(&headers).unwrap().unwrap();
        assert_eq!(back.error_code(), Some(ErrorCode::ApiTooManyRequests));
    }
}

#[test]
fn invalid_base64_in_headers_is_an_error_not_a_panic() {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", "16".parse().unwrap());
    headers.insert("grpc-status-details-bin", "not*base64!".parse().unwrap());
    let err = status_from_header_map(&headers).unwrap_err();
    assert!(matches!(err, errmap::DetailsError::Base64(_)), "{err:?}");
    // Without grpc-status there is no status at all.
    assert!(status_from_header_map(&HeaderMap::new()).unwrap().is_none());
}

#[test]
fn the_borrowed_error_info_view_reads_reason_domain_and_metadata() {
    let status = ErrorCode::ApiItemNotFound
        .builder()
        .metadata("requestedName", "FOO")
        .metadata("shard", "7")
        .build()
        .unwrap();
    let (_, back) = over_the_wire(&status);
    let (code, view) = back.error_info_view::<ErrorCode>().unwrap();
    assert_eq!(code, ErrorCode::ApiItemNotFound);
    assert_eq!(view.reason(), "API_ITEM_NOT_FOUND");
    assert_eq!(view.domain(), DOMAIN);
    assert_eq!(
        view.metadata().collect::<Vec<_>>(),
        [("code", "47"), ("requestedName", "FOO"), ("shard", "7")]
    );
    assert_eq!(view.get("shard"), Some("7"));
    assert_eq!(view.get("nope"), None);
    let (owned_code, owned) = back.error_info::<ErrorCode>().unwrap();
    assert_eq!(owned_code, code);
    assert_eq!(view.to_error_info(), owned);
    // Not a catalog error: a typed reason.
    let plain = Status::internal("x");
    assert_eq!(
        plain.check_error_info_view::<ErrorCode>().unwrap_err(),
        errmap::DetailsError::NoDetails
    );
}
