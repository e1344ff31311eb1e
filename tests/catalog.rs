//! The compiled catalog against the catalog table of the design contract, and lookups.

use std::time::Duration;

use errmap::{Catalog, ErrorCode, DOMAIN};
use tonic::Code;

/// The catalog table of the design contract (docs/design.md), copied by hand: code, name, category, gRPC code, legacy
/// HTTP status, message.
const DESIGN_TABLE: &[(i32, &str, &str, Code, u16, &str)] = &[
    (0, "AUTH_USERNAME_TAKEN", "auth_field_taken", Code::AlreadyExists, 400, "Given username is already taken."),
    (1, "AUTH_EMAIL_TAKEN", "auth_field_taken", Code::AlreadyExists, 400, "Given email is already taken."),
    (10, "AUTH_INVALID_TOKEN", "auth_token", Code::Unauthenticated, 400, "Token has an invalid format or an invalid signature."),
    (11, "AUTH_EXPIRED_TOKEN", "auth_token", Code::Unauthenticated, 400, "Token has expired, please get a new one."),
    (20, "AUTH_INVALID_CREDENTIALS", "auth_other", Code::Unauthenticated, 400, "Login (username or email) or password is invalid."),
    (21, "AUTH_REQUIRED", "auth_other", Code::Unauthenticated, 401, "Send the `token` param or the `Authorization` header to call this method."),
    (30, "AUTH_EMAIL_INVALID", "auth_field_invalid", Code::InvalidArgument, 400, "Email should have a valid format (and maybe a valid DNS)."),
    (31, "AUTH_PASSWORD_INVALID", "auth_field_invalid", Code::InvalidArgument, 400, "Password should be longer than 5 and shorter than 64 characters."),
    (32, "AUTH_USERNAME_INVALID", "auth_field_invalid", Code::InvalidArgument, 400, "Username should be longer than 4 and shorter than 16 characters."),
    (40, "API_INVALID_REQUEST", "api", Code::InvalidArgument, 400, "One or more params are missing or invalid; read about the requested method and its params."),
    (41, "API_NOT_IMPLEMENTED", "api", Code::Unimplemented, 400, "The requested method is not implemented yet."),
    (42, "API_INTERNAL_SERVER_ERROR", "api", Code::Internal, 500, "Internal error on the server side. Try again later, or contact support."),
    (43, "API_METHOD_NOT_FOUND", "api", Code::Unimplemented, 404, "The requested method does not exist."),
    (44, "API_TOO_MANY_REQUESTS", "api", Code::ResourceExhausted, 429, "Too many requests; slow down and retry later."),
    (45, "API_FORBIDDEN", "api", Code::PermissionDenied, 403, "You are not allowed to do this."),
    (46, "API_UNKNOWN_ERROR", "api", Code::Unknown, 400, "The request failed for a reason this catalog has no code for."),
    (47, "API_ITEM_NOT_FOUND", "api", Code::NotFound, 404, "The requested item was not found."),
    (49, "API_TRY_AGAIN_LATER", "api", Code::Unavailable, 503, "The service is temporarily unavailable; try again later."),
    (50, "EMAIL_CONFIRMATION_TOKEN_INVALID", "email_confirmation", Code::InvalidArgument, 400, "Your confirmation token is invalid; maybe it expired?"),
    (51, "EMAIL_CONFIRMATION_USER_NOT_FOUND", "email_confirmation", Code::NotFound, 404, "The confirmation token holds an email that was not found; did you update your email?"),
    (52, "EMAIL_CONFIRMATION_ALREADY_CONFIRMED", "email_confirmation", Code::FailedPrecondition, 409, "Your email is already confirmed."),
    (60, "OAUTH_CLIENT_NOT_FOUND", "oauth", Code::NotFound, 404, "The requested OAuth client does not exist."),
    (61, "OAUTH_CLIENT_FORBIDDEN", "oauth", Code::PermissionDenied, 403, "You are not the owner of the requested OAuth client."),
    (62, "OAUTH_CLIENT_REDIRECT_URI_MISMATCH", "oauth", Code::InvalidArgument, 400, "The redirect_uri is not the same as the registered one."),
    (63, "OAUTH_CLIENT_ID_MISMATCH", "oauth", Code::InvalidArgument, 400, "The client_id is not the same as the one the code was issued to."),
    (64, "OAUTH_CLIENT_SECRET_MISMATCH", "oauth", Code::Unauthenticated, 400, "The client secret is not valid."),
    (100, "USER_DEACTIVATED", "user", Code::PermissionDenied, 403, "You have been deactivated and may not do this action; contact support (mostly due to a ban)."),
];

#[test]
fn every_entry_equals_the_design_table() {
    let entries = ErrorCode::table().entries();
    assert_eq!(entries.len(), DESIGN_TABLE.len());
    for (entry, &(code, name, category, grpc, http, message)) in entries.iter().zip(DESIGN_TABLE) {
        assert_eq!(entry.number(), code, "{name}");
        assert_eq!(entry.name(), name, "{code}");
        assert_eq!(entry.category(), category, "{name}");
        assert_eq!(entry.grpc_code(), grpc, "{name}");
        assert_eq!(entry.http_status(), http, "{name}");
        assert_eq!(entry.message(), message, "{name}");
    }
    assert_eq!(ErrorCode::table().domain(), DOMAIN);
    assert_eq!(ErrorCode::table().enum_name(), "errmap.v1.ErrorCode");
}

#[test]
fn exactly_the_retry_codes_carry_a_delay() {
    for entry in ErrorCode::table().entries() {
        let expects_retry = matches!(entry.number(), 42 | 44 | 49);
        assert_eq!(
            entry.retry_delay().is_some(),
            expects_retry,
            "{}",
            entry.name()
        );
        if let Some(delay) = entry.retry_delay() {
            assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60));
        }
    }
}

#[test]
fn lookup_by_number_and_name_agree_with_the_table() {
    for &(code, name, ..) in DESIGN_TABLE {
        let by_code = ErrorCode::from_code(code).unwrap_or_else(|| panic!("{code} missing"));
        let by_name = ErrorCode::from_name(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(by_code, by_name);
        assert_eq!(by_code.entry().number(), code);
        assert_eq!(by_code.entry().name(), name);
        assert_eq!(by_code.to_string(), name);
    }
}

#[test]
fn unknown_numbers_miss() {
    let known: Vec<i32> = DESIGN_TABLE.iter().map(|row| row.0).collect();
    for code in -1000..1000 {
        assert_eq!(
            ErrorCode::from_code(code).is_some(),
            known.contains(&code),
            "{code}"
        );
    }
    for code in [i32::MIN, -1, 2, 48, 99, 101, 10_000, i32::MAX] {
        assert_eq!(ErrorCode::from_code(code), None, "{code}");
    }
}

#[test]
fn unknown_names_miss() {
    for name in [
        "",
        "auth_required",
        "Auth_Required",
        "AUTH_REQUIRED ",
        " AUTH_REQUIRED",
        "AUTH_REQUIRE",
        "AUTH_REQUIREDX",
        "21",
        "AUTH_REQUIRED\0",
        "API_TOO_MANY_REQUESTS_AND_SOME_MORE_TEXT_THAT_IS_LONGER_THAN_ANY_NAME",
        "ÄUTH_REQUIRED",
    ] {
        assert_eq!(ErrorCode::from_name(name), None, "{name:?}");
    }
}

#[test]
fn all_iterates_in_code_order() {
    let codes: Vec<i32> = ErrorCode::all().map(|c| c.entry().number()).collect();
    let expected: Vec<i32> = DESIGN_TABLE.iter().map(|row| row.0).collect();
    assert_eq!(codes, expected);
}

#[test]
fn categories_are_listed_once_in_code_order() {
    let categories: Vec<&str> = ErrorCode::table().categories().collect();
    assert_eq!(
        categories,
        [
            "auth_field_taken",
            "auth_token",
            "auth_other",
            "auth_field_invalid",
            "api",
            "email_confirmation",
            "oauth",
            "user"
        ]
    );
    assert!(ErrorCode::table().is_category("oauth"));
    assert!(!ErrorCode::table().is_category("OAUTH"));
    assert!(!ErrorCode::table().is_category(""));
}
