//! errmap's README, "Your own catalog": its handler and client, compiled
//! as the README shows them, against the enum that errmap-build made from
//! the README's own proto (see `build.rs`), and run.

// The README's items are `pub`, as in a library's src/lib.rs.
#[allow(unreachable_pub)]
mod readme {
    include!(concat!(env!("OUT_DIR"), "/readme/handler.rs"));
}

use errmap::{Catalog as _, ErrorStatusExt as _};
use readme::ShopError;

#[test]
fn the_readme_handler_returns_the_readme_catalogs_codes() {
    let status = readme::check_order(0, "ok").unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.error_code::<ShopError>(),
        Some(ShopError::QuantityInvalid)
    );
    let details = status.error_details().unwrap();
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "quantity");

    let status = readme::check_order(1, "declined").unwrap_err();
    assert_eq!(
        status.error_code::<ShopError>(),
        Some(ShopError::CardDeclined)
    );
    assert!(readme::check_order(1, "ok").is_ok());
}

#[test]
fn the_readme_client_reads_the_retry_delay() {
    let down = tonic::Status::from(ShopError::PaymentProviderDown);
    assert_eq!(
        readme::retry_after(&down),
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(readme::retry_after(&ShopError::CardDeclined.into()), None);
    // The README's proto, as errmap-build read it.
    let table = ShopError::table();
    assert_eq!(table.domain(), "shop.example.com");
    assert_eq!(table.entries().len(), 4);
}

#[test]
fn the_readme_template_handler_fills_its_placeholders() {
    let status = readme::check_quantity(&tonic::Request::new(()), 12).unwrap_err();
    assert_eq!(
        status.message(),
        "The quantity 12 exceeds the limit of 10 per order."
    );
    let info = status
        .error_details()
        .unwrap()
        .error_info()
        .unwrap()
        .clone();
    assert_eq!(info.reason, "SHOP_ERROR_QUANTITY_OVER_LIMIT");
    assert_eq!(info.metadata["quantity"], "12");
    assert_eq!(info.metadata["limit"], "10");
    assert!(readme::check_quantity(&tonic::Request::new(()), readme::LIMIT).is_ok());
}
