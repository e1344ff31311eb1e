//! Reading statuses from untrusted peers: arbitrary bytes never panic, and
//! the allocation-free reader agrees with the full decoder.

use bytes::Bytes;
use errmap::Catalog as _;
use errmap::{details::status_from_header_map, ErrorCode, ErrorDetails, ErrorStatusExt, DOMAIN};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::pb;

fn status_with(details: Vec<u8>) -> Status {
    Status::with_details(Code::Unknown, "m", Bytes::from(details))
}

/// Runs every reader on `status`, asserts they all agree (on the code, and
/// on finding none), and that they agree with prost's own decoding; returns
/// the code.
fn read_everything(status: &Status) -> Option<ErrorCode> {
    let fast = status.error_code::<ErrorCode>();
    assert_eq!(status.check_error_code().ok(), fast, "check_error_code");
    let info = status.error_info();
    assert_eq!(info.as_ref().map(|(c, _)| *c), fast, "error_info");
    let view = status.error_info_view();
    assert_eq!(view.map(|(c, _)| c), fast, "error_info_view");
    if let (Some((_, info)), Some((_, view))) = (&info, view) {
        assert_eq!(&view.to_error_info(), info);
        assert_eq!(info.domain, DOMAIN);
    }
    let full = ErrorStatusExt::error_details(status);
    assert_eq!(
        full.as_ref().and_then(ErrorDetails::error_code),
        fast,
        "error_details"
    );
    if let Some(details) = &full {
        let _ = details.retry_delay();
        let _ = details.other().len();
    }
    let _ = ErrorDetails::decode(status.details());
    // Whatever the readers accept, prost accepts and reads the same way.
    if let Some((code, info)) = &info {
        let decoded = pb::Status::decode(status.details()).expect("prost decodes it too");
        assert_eq!(decoded.code, status.code() as i32);
        assert_eq!(decoded.message, status.message());
        let infos: Vec<_> = decoded
            .details
            .iter()
            .filter(|a| a.type_url.rsplit('/').next() == Some("google.rpc.ErrorInfo"))
            .collect();
        assert_eq!(infos.len(), 1);
        let theirs = pb::ErrorInfo::decode(infos[0].value.as_slice()).expect("prost decodes it");
        assert_eq!(&theirs, info);
        assert_eq!(theirs.reason, code.entry().name());
    }
    fast
}

/// A status for `details` whose code and message are those inside the
/// details where prost can read them, so that the readers' consistency
/// check passes and it is the details themselves that are judged.
fn status_matching(details: Vec<u8>) -> Status {
    match pb::Status::decode(details.as_slice()) {
        Ok(inner) => Status::with_details(
            Code::from_i32(inner.code),
            inner.message,
            Bytes::from(details),
        ),
        Err(_) => status_with(details),
    }
}

/// A rich status: metadata, a field violation and a help link.
fn rich_details(code: ErrorCode) -> Vec<u8> {
    code.builder()
        .message("a developer message")
        .metadata("field", "value")
        .field_violation("name", "too short")
        .help_link("docs", "https://example.com")
        .build()
        .unwrap()
        .details()
        .to_vec()
}

fn error_info_status(reason: &str, domain: &str, extra_before: usize) -> Vec<u8> {
    let mut details = Vec::new();
    for i in 0..extra_before {
        details.push(prost_types::Any {
            type_url: format!("type.googleapis.com/example.Unknown{i}"),
            value: vec![1, 2, 3],
        });
    }
    details.push(prost_types::Any {
        type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
        value: pb::ErrorInfo {
            reason: reason.into(),
            domain: domain.into(),
            metadata: Default::default(),
        }
        .encode_to_vec(),
    });
    pb::Status {
        code: Code::Unknown as i32,
        message: "m".into(),
        details,
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_details_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_everything(&status_with(bytes));
    }

    #[test]
    fn mutated_real_details_never_panic(
        code in proptest::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let original = Status::from(code);
        let mut bytes = original.details().to_vec();
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        read_everything(&status_with(bytes));
    }

    #[test]
    fn readers_agree_on_mutated_rich_statuses(
        code in proptest::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = rich_details(code);
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        let keep = bytes.len() - cut % (bytes.len() / 8 + 1);
        bytes.truncate(keep);
        read_everything(&status_matching(bytes));
    }

    /// Statuses as errmap builds them with caller data but no extra detail
    /// (the shape the readers' shortcut takes), in every locale, flipped
    /// and cut: every reader still agrees with the others and with prost.
    #[test]
    fn readers_agree_on_mutated_statuses_errmap_builds(
        code in proptest::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        locale in proptest::sample::select(vec!["en-US", "ru", "zz"]),
        metadata in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let mut builder = code.builder().locale(locale).message("user u-42 is over quota");
        if metadata {
            builder = builder.metadata("userId", "u-42");
        }
        let original = builder.build().unwrap();
        prop_assert_eq!(read_everything(&original), Some(code));
        let mut bytes = original.details().to_vec();
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        let keep = bytes.len() - cut % (bytes.len() / 8 + 1);
        bytes.truncate(keep);
        read_everything(&status_matching(bytes.clone()));
        // And against the original code and message, as a client holds them.
        read_everything(&Status::with_details(original.code(), original.message(), Bytes::from(bytes)));
    }

    /// A status errmap built, with something after its details: another
    /// `ErrorInfo` (now two), an unknown detail, or arbitrary bytes. The
    /// shortcut must not take it; every reader agrees, as before.
    #[test]
    fn readers_agree_on_statuses_errmap_builds_with_more_after(
        code in proptest::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        what in 0u8..3,
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let original = code.builder().message("m").metadata("userId", "u-42").build().unwrap();
        let mut bytes = original.details().to_vec();
        match what {
            0 => {
                let mut any = Vec::new();
                errmap::wire::put_any_detail(&mut any, "google.rpc.ErrorInfo", b"\x0a\x03ABC");
                bytes.extend_from_slice(&any);
            }
            1 => {
                let mut any = Vec::new();
                errmap::wire::put_any_detail(&mut any, "example.Unknown", &tail);
                bytes.extend_from_slice(&any);
            }
            _ => bytes.extend_from_slice(&tail),
        }
        let status = Status::with_details(original.code(), original.message(), Bytes::from(bytes));
        let found = read_everything(&status);
        if what == 0 {
            prop_assert_eq!(found, None, "two ErrorInfo");
        }
        if what == 1 {
            prop_assert_eq!(found, Some(code), "an unknown detail is kept");
        }
    }

    /// The wire reader's shortcuts for what errmap itself sends (a known
    /// type URL, a short map entry) accept and refuse exactly what prost
    /// does: every byte of a rich status flipped or cut, the whole status
    /// and each `ErrorInfo` in it read both ways.
    #[test]
    fn the_wire_reader_accepts_exactly_what_prost_accepts(
        code in proptest::sample::select(ErrorCode::all().collect::<Vec<_>>()),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let mut bytes = rich_details(code);
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        let keep = bytes.len() - cut % (bytes.len() / 4 + 1);
        bytes.truncate(keep);
        wire_reader_agrees_with_prost(&bytes, false)?;
    }

    /// The same, on details built to probe the shortcuts' edges: each `Any`
    /// a known type URL (or a near miss) and a value, followed inside the
    /// `Any` by arbitrary bytes; each `ErrorInfo` metadata entry likewise.
    #[test]
    fn the_wire_reader_agrees_with_prost_past_the_shortcuts(
        anys in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "type.googleapis.com/google.rpc.ErrorInfo",
                    "type.googleapis.com/google.rpc.RetryInfo",
                    "type.googleapis.com/google.rpc.LocalizedMessage",
                    "type.googleapis.com/google.rpc.Help",
                    "type.googleapis.com/google.rpc.BadRequest",
                    "type.googleapis.com/google.rpc.ErrorInfO",
                    "google.rpc.ErrorInfo",
                ]),
                proptest::collection::vec(
                    (
                        "[a-z]{0,3}",
                        proptest::collection::vec(any::<u8>(), 0..140),
                        proptest::collection::vec(any::<u8>(), 0..4),
                    ),
                    0..3,
                ),
                proptest::collection::vec(any::<u8>(), 0..5),
            ),
            1..4,
        ),
    ) {
        let mut details = Vec::new();
        for (url, entries, after) in &anys {
            let mut value = Vec::new();
            // ErrorInfo: reason, then map entries as raw bytes.
            value.extend_from_slice(b"\x0a\x03ABC");
            for (key, entry_value, entry_after) in entries {
                let mut entry = Vec::new();
                entry.push(0x0a);
                prost::encoding::encode_varint(key.len() as u64, &mut entry);
                entry.extend_from_slice(key.as_bytes());
                entry.push(0x12);
                prost::encoding::encode_varint(entry_value.len() as u64, &mut entry);
                entry.extend_from_slice(entry_value);
                entry.extend_from_slice(entry_after);
                value.push(0x1a);
                prost::encoding::encode_varint(entry.len() as u64, &mut value);
                value.extend_from_slice(&entry);
            }
            let mut any = prost_types::Any { type_url: (*url).to_owned(), value }.encode_to_vec();
            any.extend_from_slice(after);
            details.push(0x1a);
            prost::encoding::encode_varint(any.len() as u64, &mut details);
            details.extend_from_slice(&any);
        }
        wire_reader_agrees_with_prost(&details, true)?;
    }

    #[test]
    fn arbitrary_header_values_never_panic(value in "[ -~]{0,256}") {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("3"));
        headers.insert("grpc-status-details-bin", HeaderValue::from_str(&value).unwrap());
        if let Ok(Some(status)) = status_from_header_map(&headers) {
            read_everything(&status);
        }
        let _ = ErrorDetails::from_header_value(value.as_bytes());
    }

    #[test]
    fn the_code_is_found_only_for_our_domain_and_known_reasons(
        reason in prop_oneof![
            proptest::sample::select(ErrorCode::all().map(|c| c.entry().name()).collect::<Vec<_>>())
                .prop_map(str::to_owned),
            "[A-Za-z_]{0,40}",
        ],
        ours in any::<bool>(),
        other_domain in "[a-z.]{0,20}",
        extra_before in 0usize..3,
    ) {
        let domain = if ours { DOMAIN.to_owned() } else { other_domain };
        let status = status_with(error_info_status(&reason, &domain, extra_before));
        let expected = if domain == DOMAIN { ErrorCode::from_name(&reason) } else { None };
        prop_assert_eq!(read_everything(&status), expected);
        prop_assert_eq!(
            status.error_details().and_then(|d| d.error_code()),
            expected
        );
    }
}

#[test]
fn unknown_detail_types_are_kept() {
    let bytes = error_info_status("AUTH_REQUIRED", DOMAIN, 2);
    let details = ErrorDetails::decode(&bytes).unwrap();
    assert_eq!(details.error_code(), Some(ErrorCode::AuthRequired));
    let kept: Vec<_> = details
        .other()
        .iter()
        .map(|a| a.type_url.as_str())
        .collect();
    assert_eq!(
        kept,
        [
            "type.googleapis.com/example.Unknown0",
            "type.googleapis.com/example.Unknown1"
        ]
    );
    assert_eq!(details.other()[0].value, [1, 2, 3]);
}

#[test]
fn a_foreign_domain_is_a_typed_error() {
    let status = status_with(error_info_status("AUTH_REQUIRED", "other.example", 0));
    assert_eq!(status.error_code::<ErrorCode>(), None);
    assert_eq!(
        status.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::ForeignDomain {
            domain: "other.example".into(),
            expected: DOMAIN.to_owned(),
        })
    );
}

#[test]
fn an_unknown_reason_is_a_typed_error() {
    let status = status_with(error_info_status("NOT_IN_THE_CATALOG", DOMAIN, 0));
    assert_eq!(
        status.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::UnknownReason {
            reason: "NOT_IN_THE_CATALOG".into()
        })
    );
}

#[test]
fn no_details_and_garbage_are_typed_errors() {
    let plain = Status::internal("boom");
    assert_eq!(
        plain.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::NoDetails)
    );
    assert_eq!(plain.error_details(), None);
    let garbage = status_with(vec![0xff, 0xff, 0xff]);
    assert!(matches!(
        garbage.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::Protobuf(_))
    ));
    assert!(matches!(
        ErrorStatusExt::check_error_details(&garbage),
        Err(errmap::DetailsError::Protobuf(_))
    ));
}

#[test]
fn a_details_status_that_disagrees_with_the_headers_is_refused() {
    let real = Status::from(ErrorCode::AuthRequired);
    let forged = Status::with_details(
        Code::NotFound,
        "other",
        Bytes::copy_from_slice(real.details()),
    );
    assert!(matches!(
        ErrorStatusExt::check_error_details(&forged),
        Err(errmap::DetailsError::StatusMismatch {
            details_code: 16,
            ..
        })
    ));
    // Every reader shares one strict reading: none of them takes the code
    // of a status whose details disagree with it.
    assert_eq!(forged.error_code::<ErrorCode>(), None);
    assert!(matches!(
        forged.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::StatusMismatch { .. })
    ));
    assert_eq!(forged.error_info::<ErrorCode>(), None);
}

#[test]
fn huge_and_deeply_nested_details_are_handled() {
    // A megabyte of unknown details.
    let mut details = Vec::new();
    for _ in 0..1024 {
        details.push(prost_types::Any {
            type_url: "type.googleapis.com/example.Big".into(),
            value: vec![7; 1024],
        });
    }
    let big = pb::Status {
        code: 2,
        message: "m".into(),
        details,
    }
    .encode_to_vec();
    let status = status_with(big);
    assert_eq!(status.error_code::<ErrorCode>(), None);
    assert_eq!(
        status.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::NoErrorInfo)
    );
    assert_eq!(
        ErrorStatusExt::check_error_details(&status)
            .unwrap()
            .other()
            .len(),
        1024
    );

    // Field 3 nested in field 3, 100,000 levels deep.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..100_000 {
        let mut outer = vec![0x1a];
        let mut len = nested.len();
        while len >= 0x80 {
            outer.push((len as u8) | 0x80);
            len >>= 7;
        }
        outer.push(len as u8);
        outer.extend_from_slice(&nested);
        nested = outer;
        if nested.len() > 4 << 20 {
            break;
        }
    }
    read_everything(&status_with(nested));
}

#[test]
fn readers_agree_both_when_they_find_a_code_and_when_none_does() {
    // A fixed walk over single-byte changes of every code's rich status.
    let (mut found, mut none) = (0, 0);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for code in ErrorCode::all() {
        let original = rich_details(code);
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bytes = original.clone();
            let at = (seed >> 33) as usize % bytes.len();
            bytes[at] ^= (seed >> 24) as u8 | 1;
            match read_everything(&status_matching(bytes)) {
                Some(_) => found += 1,
                None => none += 1,
            }
        }
        assert_eq!(read_everything(&status_matching(original)), Some(code));
    }
    assert!(found > 100 && none > 100, "found {found}, none {none}");
}

#[test]
fn a_reason_with_the_wrong_wire_type_is_refused_by_every_reader() {
    // ErrorInfo with `reason` (tag 1) sent as a varint, then a valid domain.
    let mut info = vec![0x08, 0x01];
    info.extend_from_slice(&[0x12, DOMAIN.len() as u8]);
    info.extend_from_slice(DOMAIN.as_bytes());
    assert!(
        pb::ErrorInfo::decode(info.as_slice()).is_err(),
        "prost refuses it"
    );
    let details = pb::Status {
        code: Code::Unknown as i32,
        message: "m".into(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info,
        }],
    }
    .encode_to_vec();
    let status = status_with(details);
    assert_eq!(read_everything(&status), None);
    assert!(matches!(
        status.check_error_code::<ErrorCode>(),
        Err(errmap::DetailsError::BadDetail { .. })
    ));
}

/// An `ErrorInfo` laid out as errmap writes it, then a second `reason` or
/// `domain` (which replaces the first, as prost reads it) or an unknown
/// field (which is skipped): the readers' shortcut for errmap's own bytes
/// must give the general reader's answer.
#[test]
fn a_second_reason_or_domain_after_errmaps_own_error_info_wins() {
    let other = ErrorCode::AuthExpiredToken;
    for code in [ErrorCode::ApiTooManyRequests, ErrorCode::ApiItemNotFound] {
        let original = code
            .builder()
            .message("m")
            .metadata("userId", "u-42")
            .build()
            .unwrap();
        for (appended, want) in [
            (pb_field(1, other.entry().name()), Some(other)),
            (pb_field(2, "another.domain"), None),
            (pb_field(4, "unknown field"), Some(code)),
        ] {
            let mut status = pb::Status::decode(original.details()).unwrap();
            status.details[0].value.extend_from_slice(&appended);
            let details = status.encode_to_vec();
            // prost writes it back in errmap's layout: the shortcut is tried.
            assert_eq!(details[0], 0x08);
            let received =
                Status::with_details(original.code(), original.message(), Bytes::from(details));
            assert_eq!(read_everything(&received), want, "{code} + {appended:?}");
        }
    }
}

/// The wire reader and prost agree on `bytes` as a `google.rpc.Status`:
/// both accept it or both refuse it, and read the same code, message and
/// details; and on each `ErrorInfo` in it (every detail's value, if
/// `every_value_is_error_info`), the same way.
fn wire_reader_agrees_with_prost(
    bytes: &[u8],
    every_value_is_error_info: bool,
) -> Result<(), TestCaseError> {
    let ours = errmap::wire::StatusView::parse(bytes);
    let theirs = pb::Status::decode(bytes);
    prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", bytes);
    let (Ok(ours), Ok(theirs)) = (ours, theirs) else {
        return Ok(());
    };
    prop_assert_eq!(ours.code, theirs.code);
    prop_assert_eq!(ours.message, theirs.message.as_str());
    let mine: Vec<_> = ours
        .details()
        .map(|(any, _)| (any.type_url, any.value))
        .collect();
    let prosts: Vec<_> = theirs
        .details
        .iter()
        .map(|a| (a.type_url.as_str(), a.value.as_slice()))
        .collect();
    prop_assert_eq!(&mine, &prosts);
    for (url, value) in mine {
        if !every_value_is_error_info && !url.ends_with("/google.rpc.ErrorInfo") {
            continue;
        }
        let ours = errmap::wire::ErrorInfoFields::parse(value);
        let theirs = pb::ErrorInfo::decode(value);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", value);
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            prop_assert_eq!(ours.reason, theirs.reason.as_str());
            let metadata: std::collections::HashMap<String, String> = ours
                .metadata()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            prop_assert_eq!(metadata, theirs.metadata);
        }
    }
    Ok(())
}

/// A length-delimited protobuf field.
fn pb_field(tag: u32, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(text.len() as u64, &mut out);
    out.extend_from_slice(text.as_bytes());
    out
}
