//! The shop's templated codes: filled by the builder's `.arg`, read back by
//! errmap's own reader from the wire (grpc-message, ErrorInfo metadata, the
//! LocalizedMessage of the negotiated locale); a missing or unknown
//! argument is an error of the builder; values are sent as they are, `}`
//! and control characters included, never read as a template.

use errmap::{BuildError, Catalog as _, ErrorStatusExt};
use shop_example::ShopError;
use tonic::Status;

/// `status` as it crosses the wire: written into trailers, read back.
fn over_the_wire(status: &Status) -> Status {
    let mut headers = http::HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    Status::from_header_map(&headers).expect("a status in the trailers")
}

#[test]
fn a_filled_template_reads_back_in_the_callers_locale() {
    let built = ShopError::QuantityOverLimit
        .builder()
        .locale("ru")
        .arg("quantity", 12)
        .arg("limit", 10)
        .build()
        .unwrap();
    let status = over_the_wire(&built);
    assert_eq!(
        status.message(),
        "The quantity 12 exceeds the limit of 10 per order."
    );
    assert_eq!(
        status.error_code::<ShopError>(),
        Some(ShopError::QuantityOverLimit)
    );
    let details = status.error_details().unwrap();
    let info = details.error_info().unwrap();
    assert_eq!(info.metadata["code"], "6");
    assert_eq!(info.metadata["quantity"], "12");
    assert_eq!(info.metadata["limit"], "10");
    assert_eq!(info.metadata.len(), 3);
    let localized = details.localized_message().unwrap();
    assert_eq!(localized.locale, "ru-RU");
    assert_eq!(
        localized.message,
        "Количество 12 превышает лимит в 10 на заказ."
    );
    // The borrowed view reads the same metadata without allocating.
    let (code, view) = status.error_info_view::<ShopError>().unwrap();
    assert_eq!(code, ShopError::QuantityOverLimit);
    let metadata: Vec<(&str, &str)> = view.metadata().collect();
    assert_eq!(
        metadata,
        [("code", "6"), ("quantity", "12"), ("limit", "10")]
    );
    // German, and English for a locale the catalog lacks.
    for (asked, locale, text) in [
        (
            "de-DE",
            "de-DE",
            "Die Menge 12 übersteigt die Grenze von 10 pro Bestellung.",
        ),
        (
            "fr",
            "en-US",
            "The quantity 12 exceeds the limit of 10 per order.",
        ),
    ] {
        let status = ShopError::QuantityOverLimit
            .builder()
            .locale(asked)
            .arg("quantity", 12)
            .arg("limit", 10)
            .build()
            .unwrap();
        let localized = status
            .error_details()
            .unwrap()
            .localized_message()
            .unwrap()
            .clone();
        assert_eq!(
            (localized.locale.as_str(), localized.message.as_str()),
            (locale, text)
        );
    }
}

#[test]
fn a_missing_or_unknown_argument_is_an_error_of_the_builder() {
    let missing = ShopError::AmountOverLimit
        .builder()
        .arg("amount", 6250)
        .build()
        .unwrap_err();
    assert_eq!(
        missing,
        BuildError::MissingArgument {
            name: "limit".into(),
            code: "SHOP_ERROR_AMOUNT_OVER_LIMIT".into()
        }
    );
    assert!(
        missing.to_string().contains(".arg(\"limit\", value)"),
        "{missing}"
    );
    let unknown = ShopError::AmountOverLimit
        .builder()
        .arg("amount", 1)
        .arg("limit", 2)
        .arg("currency", "EUR")
        .build()
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "the message of SHOP_ERROR_AMOUNT_OVER_LIMIT has no placeholder {currency}"
    );
    // A plain code takes no argument either.
    assert!(matches!(
        ShopError::CardDeclined.builder().arg("amount", 1).build(),
        Err(BuildError::UnknownArgument { .. })
    ));
    // A caller's own developer message replaces grpc-message; the
    // arguments still fill the LocalizedMessage and the metadata.
    let own = ShopError::AmountOverLimit
        .builder()
        .message("amount over the card limit")
        .arg("amount", 1)
        .arg("limit", 2)
        .build()
        .unwrap();
    assert_eq!(own.message(), "amount over the card limit");
    assert_eq!(
        own.error_details()
            .unwrap()
            .localized_message()
            .unwrap()
            .message,
        "The amount 1 exceeds the card's limit of 2."
    );
}

#[test]
fn to_status_without_arguments_names_the_placeholders_and_sends_no_braces() {
    let status = over_the_wire(&ShopError::QuantityOverLimit.to_status());
    assert_eq!(
        status.message(),
        "The quantity <quantity> exceeds the limit of <limit> per order."
    );
    let details = status.error_details().unwrap();
    assert_eq!(
        details.localized_message().unwrap().message,
        status.message()
    );
    assert_eq!(details.error_info().unwrap().metadata.len(), 1);
    assert!(!status.message().contains(['{', '}']));
    let entry = ShopError::QuantityOverLimit.entry();
    assert!(entry.is_template());
    assert_eq!(entry.params().collect::<Vec<_>>(), ["quantity", "limit"]);
    assert!(!ShopError::CardDeclined.entry().is_template());
}

#[test]
fn values_with_braces_and_control_characters_travel_as_they_are() {
    let nasty = "12} {limit}\r\n\u{7}\u{1b}[31m%";
    let built = ShopError::QuantityOverLimit
        .builder()
        .locale("de")
        .arg("quantity", nasty)
        .arg("limit", 10)
        .build()
        .unwrap();
    let status = over_the_wire(&built);
    // grpc-message is percent-encoded on the wire and decoded back whole.
    assert_eq!(
        status.message(),
        format!("The quantity {nasty} exceeds the limit of 10 per order.")
    );
    let details = status.error_details().unwrap();
    assert_eq!(details.error_info().unwrap().metadata["quantity"], nasty);
    assert_eq!(
        details.localized_message().unwrap().message,
        format!("Die Menge {nasty} übersteigt die Grenze von 10 pro Bestellung.")
    );
    // The trailer budget counts the filled, escaped message: an argument
    // too large for it is refused, not cut.
    let huge = "}".repeat(7_000);
    assert!(matches!(
        ShopError::QuantityOverLimit
            .builder()
            .arg("quantity", &huge)
            .arg("limit", 10)
            .build(),
        Err(BuildError::TooLarge { .. })
    ));
}
