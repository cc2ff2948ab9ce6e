//! Turns an app's identity document (JSON from a whoami endpoint, a response header or an old
//! store) into an [`Identity`] with the JSON pointers of `[identity.capture]`, or an HTML page
//! ("Logged in as alice") with a CSS selector or a pattern per field.

use super::record::Identity;
use crate::config::{HtmlIdentity, HtmlPick, IdentityMapping};
use serde_json::Value;
use std::cell::OnceCell;

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

/// `None` when the page names no user: no match, or an empty one (a logged-out page).
/// Selectors match the parsed page (an element's text, whitespace collapsed), patterns the page
/// source (their first capture group). Roles: every match, each split on commas.
pub fn identity_from_html(page: &str, html: &HtmlIdentity) -> Option<Identity> {
    // Parsed only when a selector needs it.
    let document = OnceCell::new();
    let picked = |pick: &HtmlPick| -> Vec<String> {
        match pick {
            HtmlPick::Selector(selector) => document
                .get_or_init(|| scraper::Html::parse_document(page))
                .select(selector)
                .map(|element| {
                    let text: String = element.text().collect();
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect(),
            HtmlPick::Pattern(pattern) => pattern
                .captures_iter(page)
                .filter_map(|found| found.get(1))
                .map(|value| value.as_str().trim().to_string())
                .collect(),
        }
    };
    let user = picked(&html.user).into_iter().next()?;
    if user.is_empty() {
        return None;
    }
    let roles = html.roles.as_ref().map_or_else(Vec::new, |pick| {
        picked(pick)
            .iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(String::from)
            .collect()
    });
    let email = html
        .email
        .as_ref()
        .and_then(|pick| picked(pick).into_iter().find(|e| !e.is_empty()));
    Some(Identity {
        user,
        roles,
        email,
        attributes: Default::default(),
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

    fn html(user: HtmlPick, roles: Option<HtmlPick>, email: Option<HtmlPick>) -> HtmlIdentity {
        HtmlIdentity { user, roles, email }
    }

    fn selector(css: &str) -> HtmlPick {
        HtmlPick::Selector(scraper::Selector::parse(css).unwrap())
    }

    fn pattern(re: &str) -> HtmlPick {
        HtmlPick::Pattern(regex::Regex::new(re).unwrap())
    }

    const PAGE: &str = "<html><body><header>Logged in as <b id=user>\n  alice \n</b>\
        <ul class=roles><li>admin</li><li> editor </li></ul>\
        <a class=mail href='mailto:a@x'>a@x</a></header></body></html>";

    #[test]
    fn html_by_selector() {
        let mapping = html(
            selector("#user"),
            Some(selector(".roles li")),
            Some(selector("a.mail")),
        );
        let identity = identity_from_html(PAGE, &mapping).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.roles, ["admin", "editor"]);
        assert_eq!(identity.email.as_deref(), Some("a@x"));
    }

    #[test]
    fn html_by_pattern() {
        let mapping = html(
            pattern(r"Logged in as <b id=user>\s*(\w+)"),
            Some(pattern(r"<li>([^<]*)</li>")),
            Some(pattern(r"mailto:([^']+)")),
        );
        let identity = identity_from_html(PAGE, &mapping).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.roles, ["admin", "editor"]);
        assert_eq!(identity.email.as_deref(), Some("a@x"));
    }

    #[test]
    fn html_without_a_user_is_anonymous() {
        let by_selector = html(selector("#user"), None, None);
        let by_pattern = html(pattern(r"Logged in as (\w*)"), None, None);
        for page in [
            "<p>Please log in</p>",
            "<p>Logged in as <b id=user>  </b></p>",
            "<p>Logged in as </p>",
        ] {
            assert_eq!(identity_from_html(page, &by_selector), None, "{page}");
            assert_eq!(identity_from_html(page, &by_pattern), None, "{page}");
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
