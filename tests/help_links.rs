//! `set_help_base_url` in a process of its own (the setting is global):
//! every catalog status links to its page, in one Help detail with the
//! builder's own links after it.

use errmap::status::{help_base_url, set_help_base_url, HelpUrlError};
use errmap::{Catalog as _, ErrorCode, ErrorStatusExt as _};

#[test]
fn every_status_links_to_its_page() {
    set_help_base_url("https://errors.example.com/").unwrap();
    assert_eq!(help_base_url(), Some("https://errors.example.com"));
    // The same URL again is fine; another is refused.
    set_help_base_url("https://errors.example.com").unwrap();
    assert_eq!(
        set_help_base_url("https://other.example.com"),
        Err(HelpUrlError::AlreadySet(
            "https://errors.example.com".into()
        ))
    );

    for code in ErrorCode::all() {
        for status in [code.to_status(), code.to_status_for("ru")] {
            let details = status.check_error_details().unwrap();
            let links = &details.help().expect("a Help detail").links;
            assert_eq!(links.len(), 1, "{code}");
            assert_eq!(
                links[0].url,
                format!("https://errors.example.com/errors/{}", code.entry().name())
            );
        }
    }

    // A builder's own links join the catalog's, in the one Help detail.
    let status = ErrorCode::AuthPasswordInvalid
        .builder()
        .message("too short")
        .help_link("Password rules", "https://example.com/passwords")
        .build()
        .unwrap();
    let details = status.check_error_details().unwrap();
    let urls: Vec<&str> = details
        .help()
        .unwrap()
        .links
        .iter()
        .map(|l| l.url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://errors.example.com/errors/AUTH_PASSWORD_INVALID",
            "https://example.com/passwords"
        ]
    );
    let rpc: tonic_types::pb::Status = prost::Message::decode(status.details()).unwrap();
    let helps = rpc
        .details
        .iter()
        .filter(|a| a.type_url.ends_with("google.rpc.Help"))
        .count();
    assert_eq!(helps, 1);

    // The layer's rewrites and metadata-carrying builds keep the link.
    let status = ErrorCode::ApiItemNotFound
        .builder()
        .metadata("orderId", "7")
        .build()
        .unwrap();
    assert_eq!(
        status
            .check_error_details()
            .unwrap()
            .help()
            .unwrap()
            .links
            .len(),
        1
    );
}
