//! A second team on errmap: the shop's checkout, with its own error catalog
//! in its own proto (`proto/shop/v1/shop.proto`), turned into [`ShopError`]
//! by `errmap-build` in `build.rs`.
//!
//! ```
//! use errmap::{Catalog, ErrorStatusExt};
//! use shop_example::ShopError;
//!
//! let status = tonic::Status::from(ShopError::CardDeclined);
//! assert_eq!(status.code(), tonic::Code::FailedPrecondition);
//! assert_eq!(status.error_code::<ShopError>(), Some(ShopError::CardDeclined));
//! assert_eq!(ShopError::CardDeclined.entry().http_status(), 402);
//! assert_eq!(ShopError::table().domain(), "shop.example.com");
//! ```

use errmap::Catalog as _;
use tonic::{Request, Response, Status};

include!(concat!(env!("OUT_DIR"), "/errmap_catalogs.rs"));

/// The shop's protobuf types and gRPC service, from tonic-prost-build.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("shop.v1");
}

/// The descriptor set of `shop.proto` and its imports, custom options kept:
/// for reflection, and for `errmap serve --catalog`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/errmap_catalogs.bin"));

/// The checkout service. Its failures are `ShopError` codes:
///
/// | request | error |
/// |---|---|
/// | `quantity` ≤ 0 | `QuantityInvalid`, with a field violation |
/// | `quantity` over [`MAX_QUANTITY`] | `QuantityOverLimit`, its template filled: `quantity`, `limit` |
/// | `card` `"small"`, amount over [`SMALL_CARD_LIMIT`] | `AmountOverLimit`, its template filled: `amount`, `limit` |
/// | `cart_id` empty or `"missing"` | `CartNotFound` |
/// | `cart_id` `"sold-out"` | `OutOfStock` |
/// | `card` `"declined"` | `CardDeclined` |
/// | `card` `"provider-down"` | `PaymentProviderDown` (with a retry delay) |
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkout;

/// The most of an item one order may hold.
pub const MAX_QUANTITY: i32 = 10;

/// What a `"small"` card may pay, in cents.
pub const SMALL_CARD_LIMIT: i64 = 5_000;

/// The price of one item, in cents.
pub const ITEM_PRICE: i64 = 1_250;

#[tonic::async_trait]
impl pb::checkout_server::Checkout for Checkout {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        // Errors answer in the caller's accept-language: de-DE or en-US.
        let (caller, _, order) = request.into_parts();
        if order.quantity <= 0 {
            return Err(ShopError::QuantityInvalid
                .builder()
                .locale(&caller)
                .field_violation("quantity", "must be 1 or more")
                .build()?);
        }
        if order.quantity > MAX_QUANTITY {
            // "The quantity {quantity} exceeds the limit of {limit} per order."
            return Err(ShopError::QuantityOverLimit
                .builder()
                .locale(&caller)
                .arg("quantity", order.quantity)
                .arg("limit", MAX_QUANTITY)
                .field_violation("quantity", format!("at most {MAX_QUANTITY}"))
                .build()?);
        }
        let amount = i64::from(order.quantity) * ITEM_PRICE;
        if order.card == "small" && amount > SMALL_CARD_LIMIT {
            return Err(ShopError::AmountOverLimit
                .builder()
                .locale(&caller)
                .arg("amount", amount)
                .arg("limit", SMALL_CARD_LIMIT)
                .build()?);
        }
        let fail = |code: ShopError| Err(code.to_status_for(&caller));
        match (order.cart_id.as_str(), order.card.as_str()) {
            ("" | "missing", _) => fail(ShopError::CartNotFound),
            ("sold-out", _) => fail(ShopError::OutOfStock),
            (_, "declined") => fail(ShopError::CardDeclined),
            (_, "provider-down") => fail(ShopError::PaymentProviderDown),
            (cart, _) => Ok(Response::new(pb::PlaceOrderResponse {
                order_id: format!("order-{cart}"),
            })),
        }
    }
}
