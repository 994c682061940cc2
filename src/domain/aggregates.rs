//! Behavioural aggregates, kept per subject and updated in the transaction of each
//! event, from the Segment e-commerce and email event names. Segments read these.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const RECENTLY_VIEWED: usize = 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregates {
    pub last_page_view_at: Option<i64>,
    pub last_email_open_at: Option<i64>,
    pub last_email_click_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub last_search_at: Option<i64>,
    pub purchase_count: i64,
    /// Sum of order totals, in whatever currency each order was in.
    pub lifetime_value: f64,
    /// Product ids, most recent first, at most 20.
    pub recently_viewed: Vec<String>,
    /// Product ids added and neither removed nor bought since.
    pub cart: Vec<String>,
    pub cart_updated_at: Option<i64>,
    /// Set once the cart has been left alone for the quiet period.
    pub cart_abandoned_at: Option<i64>,
}

fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

fn product_id(p: &Map<String, Value>) -> Option<String> {
    ["product_id", "sku", "id"]
        .iter()
        .find_map(|k| match p.get(*k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// Segment's Order Completed carries `total`, `revenue` or `value`.
fn order_total(p: &Map<String, Value>) -> f64 {
    ["total", "revenue", "value"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_f64))
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
}

impl Aggregates {
    pub fn average_order_value(&self) -> Option<f64> {
        (self.purchase_count > 0).then(|| self.lifetime_value / self.purchase_count as f64)
    }

    /// Applies one event: `kind` is the Segment call (`page`, `track` ...), `name` its event name.
    pub fn apply(
        &mut self,
        kind: &str,
        name: Option<&str>,
        properties: &Map<String, Value>,
        at: i64,
    ) {
        let at_opt = Some(at);
        match (kind, name.unwrap_or_default()) {
            ("page", _) => self.last_page_view_at = later(self.last_page_view_at, at_opt),
            ("track", "Product Viewed") => {
                if let Some(id) = product_id(properties) {
                    self.recently_viewed.retain(|p| *p != id);
                    self.recently_viewed.insert(0, id);
                    self.recently_viewed.truncate(RECENTLY_VIEWED);
                }
            }
            ("track", "Product Added") => {
                if let Some(id) = product_id(properties)
                    && !self.cart.contains(&id)
                {
                    self.cart.push(id);
                }
                self.touch_cart(at);
            }
            ("track", "Product Removed") => {
                if let Some(id) = product_id(properties) {
                    self.cart.retain(|p| *p != id);
                }
                self.touch_cart(at);
            }
            ("track", "Cart Viewed" | "Checkout Started") => self.touch_cart(at),
            ("track", "Order Completed") => {
                self.purchase_count += 1;
                self.lifetime_value += order_total(properties);
                self.last_purchase_at = later(self.last_purchase_at, at_opt);
                // An order older than the cart's last change (an imported order history)
                // says nothing about today's cart.
                if self.cart_updated_at.is_none_or(|t| t <= at) {
                    self.cart.clear();
                    self.cart_abandoned_at = None;
                    self.cart_updated_at = later(self.cart_updated_at, at_opt);
                }
            }
            ("track", "Email Opened") => {
                self.last_email_open_at = later(self.last_email_open_at, at_opt);
            }
            ("track", "Email Link Clicked") => {
                self.last_email_click_at = later(self.last_email_click_at, at_opt);
            }
            ("track", "Products Searched") => {
                self.last_search_at = later(self.last_search_at, at_opt);
            }
            _ => {}
        }
    }

    fn touch_cart(&mut self, at: i64) {
        self.cart_updated_at = later(self.cart_updated_at, Some(at));
        self.cart_abandoned_at = None;
    }

    /// Marks the cart abandoned if it holds products and has been quiet since `cutoff`.
    pub fn abandon_if_quiet(&mut self, cutoff: i64, now: i64) -> bool {
        let quiet = self.cart_updated_at.is_some_and(|t| t <= cutoff);
        if !self.cart.is_empty() && quiet && self.cart_abandoned_at.is_none() {
            self.cart_abandoned_at = Some(now);
            return true;
        }
        false
    }

    /// Folds another subject's aggregates into these (a merge).
    pub fn absorb(&mut self, other: &Aggregates) {
        self.last_page_view_at = later(self.last_page_view_at, other.last_page_view_at);
        self.last_email_open_at = later(self.last_email_open_at, other.last_email_open_at);
        self.last_email_click_at = later(self.last_email_click_at, other.last_email_click_at);
        self.last_purchase_at = later(self.last_purchase_at, other.last_purchase_at);
        self.last_search_at = later(self.last_search_at, other.last_search_at);
        self.purchase_count += other.purchase_count;
        self.lifetime_value += other.lifetime_value;
        for id in &other.recently_viewed {
            if !self.recently_viewed.contains(id) {
                self.recently_viewed.push(id.clone());
            }
        }
        self.recently_viewed.truncate(RECENTLY_VIEWED);
        for id in &other.cart {
            if !self.cart.contains(id) {
                self.cart.push(id.clone());
            }
        }
        self.cart_updated_at = later(self.cart_updated_at, other.cart_updated_at);
        if !self.cart.is_empty() {
            self.cart_abandoned_at = self.cart_abandoned_at.min(other.cart_abandoned_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_older_order_counts_but_leaves_todays_cart_alone() {
        let mut a = Aggregates::default();
        a.apply(
            "track",
            Some("Product Added"),
            &props(json!({"product_id": "p1"})),
            100,
        );
        a.apply(
            "track",
            Some("Order Completed"),
            &props(json!({"total": 30})),
            50,
        );
        assert_eq!((a.purchase_count, a.cart.len()), (1, 1));
        assert_eq!(a.last_purchase_at, Some(50));
        a.apply(
            "track",
            Some("Order Completed"),
            &props(json!({"total": 10})),
            150,
        );
        assert_eq!((a.purchase_count, a.cart.len()), (2, 0));
        assert!((a.lifetime_value - 40.0).abs() < 1e-9);
    }

    #[test]
    fn a_shopping_session_updates_cart_purchases_and_views() {
        let mut a = Aggregates::default();
        a.apply("page", Some("Home"), &Map::new(), 10);
        a.apply(
            "track",
            Some("Product Viewed"),
            &props(json!({"product_id": "p1"})),
            20,
        );
        a.apply(
            "track",
            Some("Product Viewed"),
            &props(json!({"product_id": "p2"})),
            30,
        );
        a.apply(
            "track",
            Some("Product Viewed"),
            &props(json!({"product_id": "p1"})),
            40,
        );
        assert_eq!(a.recently_viewed, ["p1", "p2"]);
        a.apply(
            "track",
            Some("Product Added"),
            &props(json!({"product_id": "p1"})),
            50,
        );
        a.apply(
            "track",
            Some("Product Added"),
            &props(json!({"product_id": "p2"})),
            60,
        );
        a.apply(
            "track",
            Some("Product Removed"),
            &props(json!({"product_id": "p2"})),
            70,
        );
        assert_eq!(a.cart, ["p1"]);
        assert!(
            !a.abandon_if_quiet(69, 100),
            "touched at 70, after the cutoff"
        );
        assert!(a.abandon_if_quiet(80, 100));
        assert_eq!(a.cart_abandoned_at, Some(100));
        a.apply(
            "track",
            Some("Order Completed"),
            &props(json!({"total": 30.0})),
            200,
        );
        a.apply(
            "track",
            Some("Order Completed"),
            &props(json!({"revenue": 10})),
            300,
        );
        assert!(a.cart.is_empty() && a.cart_abandoned_at.is_none());
        assert_eq!(a.purchase_count, 2);
        assert_eq!(a.average_order_value(), Some(20.0));
        assert_eq!(a.last_purchase_at, Some(300));
        assert_eq!(a.last_page_view_at, Some(10));
        a.apply("track", Some("Email Opened"), &Map::new(), 5);
        a.apply("track", Some("Email Link Clicked"), &Map::new(), 6);
        assert_eq!(
            (a.last_email_open_at, a.last_email_click_at),
            (Some(5), Some(6))
        );
    }

    #[test]
    fn absorbing_adds_counts_and_keeps_the_latest_times() {
        let mut a = Aggregates {
            purchase_count: 1,
            lifetime_value: 5.0,
            last_purchase_at: Some(10),
            ..Default::default()
        };
        let b = Aggregates {
            purchase_count: 2,
            lifetime_value: 7.0,
            last_purchase_at: Some(20),
            cart: vec!["x".into()],
            ..Default::default()
        };
        a.absorb(&b);
        assert_eq!(
            (a.purchase_count, a.lifetime_value, a.last_purchase_at),
            (3, 12.0, Some(20))
        );
        assert_eq!(a.cart, ["x"]);
    }
}
