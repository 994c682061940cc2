//! Segment's e-commerce and email event names, and the data category each event belongs
//! to. Retention, segmentation and the gate read events through this one map.

/// Browsing: pages, products and promotions seen, searches.
pub const BROWSING: &[&str] = &[
    "Product Viewed",
    "Products Searched",
    "Product List Viewed",
    "Product List Filtered",
    "Product Clicked",
    "Promotion Viewed",
    "Promotion Clicked",
];
/// Orders, carts and checkout.
pub const PURCHASE: &[&str] = &[
    "Order Completed",
    "Order Updated",
    "Order Refunded",
    "Order Cancelled",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Viewed",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Coupon Applied",
];
/// Email delivery and engagement.
pub const EMAIL: &[&str] = &[
    "Email Delivered",
    "Email Opened",
    "Email Link Clicked",
    "Email Bounced",
    "Email Marked as Spam",
    "Unsubscribed",
];

/// The category of an event of `kind` (`track`, `page` ...) named `name`.
pub fn category(kind: &str, name: Option<&str>) -> &'static str {
    match kind {
        "page" | "screen" => "user.behavior.browsing_history",
        "track" => {
            let name = name.unwrap_or_default();
            if BROWSING.contains(&name) {
                "user.behavior.browsing_history"
            } else if PURCHASE.contains(&name) {
                "user.behavior.purchase_history"
            } else if EMAIL.contains(&name) {
                "user.behavior.email_engagement"
            } else {
                "user.behavior"
            }
        }
        _ => "user.account",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fall_into_their_categories() {
        assert_eq!(category("page", None), "user.behavior.browsing_history");
        assert_eq!(
            category("track", Some("Order Completed")),
            "user.behavior.purchase_history"
        );
        assert_eq!(
            category("track", Some("Email Opened")),
            "user.behavior.email_engagement"
        );
        assert_eq!(category("track", Some("Level Up")), "user.behavior");
        assert_eq!(category("identify", None), "user.account");
    }
}
