//! Which attribute names are direct identifiers (stored only sealed) until the taxonomy
//! in `policies/` classifies attributes (issue 4). Names compare without case, `_` or `-`.
fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-' && *c != ' ')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The fideslang category of a trait that directly identifies its person, or `None`.
pub fn direct_identifier(name: &str) -> Option<&'static str> {
    match squash(name).as_str() {
        "name" => Some("user.name"),
        other => identifying_property(other),
    }
}

/// Like [`direct_identifier`] for event properties, where a bare `name` is the product's
/// or page's name (Segment's e-commerce spec), not a person's.
fn identifying_property(name: &str) -> Option<&'static str> {
    match squash(name).as_str() {
        "email" | "emailaddress" => Some("user.contact.email"),
        "phone" | "phonenumber" | "mobile" | "mobilephone" => Some("user.contact.phone_number"),
        "firstname" | "lastname" | "fullname" | "givenname" | "familyname" | "surname" => {
            Some("user.name")
        }
        "address" | "street" | "streetaddress" | "postalcode" | "zip" | "zipcode" => {
            Some("user.contact.address")
        }
        "ip" | "ipaddress" => Some("user.device.ip_address"),
        _ => None,
    }
}

/// Removes direct identifiers at any depth of a JSON value (event properties).
pub fn strip_identifiers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| identifying_property(k).is_none());
            for child in map.values_mut() {
                strip_identifiers(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_identifiers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_recognised_whatever_their_spelling_and_removed_at_depth() {
        assert_eq!(direct_identifier("E-mail"), Some("user.contact.email"));
        assert_eq!(direct_identifier("first_name"), Some("user.name"));
        assert_eq!(direct_identifier("firstName"), Some("user.name"));
        assert_eq!(direct_identifier("plan"), None);
        assert_eq!(direct_identifier("Name"), Some("user.name"));
        let mut v = serde_json::json!({"revenue": 5, "email": "x", "customer": {"Phone": "1", "tier": "gold"},
            "products": [{"id": "p1", "name": "Shoe"}]});
        strip_identifiers(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"revenue": 5, "customer": {"tier": "gold"},
                "products": [{"id": "p1", "name": "Shoe"}]})
        );
    }
}
