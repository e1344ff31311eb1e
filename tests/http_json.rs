//! Issue 15's mapping of a status to the three HTTP error shapes, against
//! golden files in tests/golden/ (`UPDATE_GOLDEN=1` rewrites them; review
//! the diff).

use errmap::{Catalog as _, ErrorCode};
use errmap_server::http_error::{HttpErrors, Shape};
use tonic::Status;

fn statuses() -> Vec<(&'static str, Status)> {
    vec![
        (
            "miss_47",
            ErrorCode::ApiItemNotFound
                .builder()
                .message("no catalog error has requestedCode \"48\"")
                .metadata("requestedCode", "48")
                .build()
                .unwrap(),
        ),
        ("auth_21", ErrorCode::AuthRequired.to_status()),
        ("shed_44", ErrorCode::ApiTooManyRequests.to_status()),
        ("foreign", Status::not_found("no order 7")),
    ]
}

/// The golden text of one response: status line, the headers that matter,
/// and the body, pretty-printed.
fn render(response: &http::Response<String>) -> String {
    let mut out = format!("HTTP {}\n", response.status().as_u16());
    for name in ["content-type", "retry-after", "www-authenticate"] {
        if let Some(value) = response.headers().get(name) {
            out.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
        }
    }
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    out.push('\n');
    out.push_str(&serde_json::to_string_pretty(&body).unwrap());
    out.push('\n');
    out
}

#[test]
fn every_shape_matches_its_golden_file() {
    let errors = HttpErrors::default().with_public_url("https://errors.example.com/");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (name, status) in statuses() {
        for (shape_name, shape) in [
            ("legacy", Shape::Legacy),
            ("google", Shape::Google),
            ("problem", Shape::Problem),
        ] {
            let path = format!("{dir}/{name}.{shape_name}.txt");
            let got = render(&errors.response(&status, shape));
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{path} is missing: run with UPDATE_GOLDEN=1"));
            if got != want {
                mismatches.push(format!("{path}:\n--- want\n{want}\n--- got\n{got}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_shapes_agree_on_what_they_share() {
    let errors = HttpErrors::default();
    for (name, status) in statuses() {
        let legacy = errors.body(&status, Shape::Legacy);
        let google = errors.body(&status, Shape::Google);
        let problem = errors.body(&status, Shape::Problem);
        let http = errors.http_status(&status).as_u16();
        assert_eq!(legacy["error"]["status"], http, "{name}");
        assert_eq!(google["error"]["code"], http, "{name}");
        assert_eq!(problem["status"], http, "{name}");
        assert_eq!(legacy["error"]["message"], status.message(), "{name}");
        assert_eq!(google["error"]["message"], status.message(), "{name}");
        assert_eq!(problem["detail"], status.message(), "{name}");
        assert_eq!(legacy["v"], "1", "{name}");
        // The catalog code, where there is one, in the legacy and RFC 9457
        // bodies, and in the ErrorInfo of the AIP-193 details.
        let code = errmap::details::catalog_entry_of(&status, &errors.catalogs())
            .ok()
            .map(|(_, e)| e.number());
        assert_eq!(legacy["error"]["code"], serde_json::json!(code), "{name}");
        assert_eq!(problem["code"], serde_json::json!(code), "{name}");
        // Without a public URL, RFC 9457's type is about:blank.
        assert_eq!(problem["type"], "about:blank", "{name}");
    }
    let google = errors.body(&ErrorCode::ApiTooManyRequests.to_status(), Shape::Google);
    let details = google["error"]["details"].as_array().unwrap();
    let types: Vec<&str> = details
        .iter()
        .map(|d| d["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/google.rpc.ErrorInfo",
            "type.googleapis.com/google.rpc.LocalizedMessage",
            "type.googleapis.com/google.rpc.RetryInfo"
        ]
    );
    assert_eq!(details[2]["retryDelay"], "1s");
    assert_eq!(details[0]["metadata"]["code"], "44");
}

#[test]
fn the_api_version_and_default_shape_are_settings() {
    let errors = HttpErrors::default()
        .with_api_version("2.3")
        .with_default_shape(Shape::Google);
    let status = ErrorCode::ApiItemNotFound.to_status();
    assert_eq!(errors.body(&status, Shape::Legacy)["v"], "2.3");
    let response = errors.response_for(&status, &http::HeaderMap::new());
    let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
}

#[test]
fn a_status_built_without_a_base_url_has_no_help_link() {
    let details =
        errmap::ErrorDetails::decode(ErrorCode::ApiItemNotFound.to_status().details()).unwrap();
    assert!(details.help().is_none());
}
