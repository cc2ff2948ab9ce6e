//! Turns an app's identity document (JSON from a whoami endpoint, a response header or an old
//! store) into an [`Identity`], with the JSON pointers of `[identity.capture]`.

use super::record::Identity;
use crate::config::IdentityMapping;
use serde_json::Value;

/// `None` when the document names no user (anonymous): then nothing is stored.
pub fn identity_from_json(doc: &Value, mapping: &IdentityMapping) -> Option<Identity> {
    let user = scalar(doc.pointer(&mapping.user)?)?;
    if user.is_empty() {
        return None;
    }
    let roles = match doc.pointer(&mapping.roles) {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    let email = doc.pointer(&mapping.email).and_then(scalar);
    let attributes = mapping
        .attributes
        .iter()
        .filter_map(|(name, pointer)| Some((name.clone(), scalar(doc.pointer(pointer)?)?)))
        .collect();
    Some(Identity {
        user,
        roles,
        email,
        attributes,
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> IdentityMapping {
        IdentityMapping {
            user: "/user/name".into(),
            roles: "/user/roles".into(),
            email: "/user/email".into(),
            attributes: [("tenant".to_string(), "/org/id".to_string())].into(),
        }
    }

    #[test]
    fn maps_nested_fields() {
        let doc = json!({"user": {"name": "alice", "roles": ["admin", "user"], "email": "a@x"}, "org": {"id": 42}});
        let identity = identity_from_json(&doc, &mapping()).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.roles, ["admin", "user"]);
        assert_eq!(identity.email.as_deref(), Some("a@x"));
        assert_eq!(identity.attributes["tenant"], "42");
    }

    #[test]
    fn no_user_means_anonymous() {
        for doc in [
            json!({"user": null}),
            json!({}),
            json!({"user": {"name": ""}}),
            json!({"user": {"name": null}}),
        ] {
            assert_eq!(identity_from_json(&doc, &mapping()), None, "{doc}");
        }
    }

    #[test]
    fn comma_separated_roles() {
        let doc = json!({"user": {"name": 7, "roles": "a, b,,c"}});
        let identity = identity_from_json(&doc, &mapping()).unwrap();
        assert_eq!(identity.user, "7");
        assert_eq!(identity.roles, ["a", "b", "c"]);
    }
}
