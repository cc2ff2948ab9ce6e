//! What a session keeps of the client's `User-Agent`: a short device label such as
//! "Chrome 131 on Mac OSX", enough for an operator to tell a user's sessions apart. A whole
//! browser User-Agent is over 100 bytes of Redis memory per session and the client's to choose.

use http::HeaderValue;

/// The longest label kept, in bytes.
pub const MAX_DEVICE_LABEL: usize = 40;

/// The device label of a `User-Agent` header: browser, major version and OS when the
/// User-Agent is one a parser knows, else its first product token (`curl/8.5.0`), cut to
/// [`MAX_DEVICE_LABEL`] bytes. `None` for an absent, empty or non-ASCII header.
pub fn device_label(user_agent: Option<&HeaderValue>) -> Option<String> {
    let user_agent = user_agent?.to_str().ok()?.trim();
    let known = |value: &str| !value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN;
    let mut label = match woothee::parser::Parser::new().parse(user_agent) {
        // Browsers, devices and crawlers; for other programs ("misc": HTTP libraries, tools)
        // their own product token says more.
        Some(parsed)
            if known(parsed.name)
                && matches!(
                    parsed.category,
                    "pc" | "smartphone" | "mobilephone" | "appliance" | "crawler"
                ) =>
        {
            let mut label = parsed.name.to_string();
            let major = parsed.version.split('.').next().unwrap_or_default();
            if known(major) {
                label.push(' ');
                label.push_str(major);
            }
            if known(parsed.os) {
                label.push_str(" on ");
                label.push_str(parsed.os);
            }
            label
        }
        _ => user_agent
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    // ASCII only (`to_str` takes visible ASCII, and the parser's names are ASCII): every byte
    // is a character boundary.
    label.truncate(MAX_DEVICE_LABEL);
    (!label.is_empty()).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(user_agent: &str) -> Option<String> {
        device_label(Some(&HeaderValue::from_str(user_agent).unwrap()))
    }

    #[test]
    fn browsers_are_named_by_name_major_version_and_os() {
        let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(label(chrome).as_deref(), Some("Chrome 131 on Mac OSX"));
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(label(firefox).as_deref(), Some("Firefox 133 on Linux"));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
        assert_eq!(label(edge).as_deref(), Some("Edge 131 on Windows 10"));
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(label(iphone).as_deref(), Some("Safari 17 on iPhone"));
    }

    #[test]
    fn other_clients_keep_their_first_product_token_within_the_limit() {
        assert_eq!(label("curl/8.5.0").as_deref(), Some("curl/8.5.0"));
        let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(label(bot).as_deref(), Some("Googlebot"));
        assert_eq!(label("alice-device").as_deref(), Some("alice-device"));
        let long = format!("{}/1 (extra)", "x".repeat(100));
        assert_eq!(label(&long).unwrap().len(), MAX_DEVICE_LABEL);
        assert_eq!(label("   "), None);
        assert_eq!(device_label(None), None);
        let not_ascii = HeaderValue::from_bytes(b"caf\xc3\xa9/1").unwrap();
        assert_eq!(device_label(Some(&not_ascii)), None);
    }
}
