//! How a whoami answer is read: JSON with the identity pointers, or an HTML page with a CSS
//! selector or a pattern per field. One check for `[identity.capture]` and whoami old stores.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::RawHtmlPicks;
use super::super::validated::{HtmlIdentity, HtmlPick, WhoamiFormat};
use super::Validator;
use toml::Spanned;

/// Where the format key is: its full name, and where the picks' keys are named from.
pub(super) struct FormatKeys<'a> {
    /// e.g. `identity.capture.whoami_format`.
    pub format: &'a str,
    /// What a pick without the html format is told to add, e.g. `whoami_format = "html"`.
    pub needs: &'static str,
    /// Prefix of the picks' keys, e.g. `identity.capture`.
    pub table: &'a str,
}

impl Validator<'_> {
    pub(super) fn whoami_format(
        &self,
        format: &Option<Spanned<String>>,
        picks: RawHtmlPicks<'_>,
        keys: &FormatKeys<'_>,
    ) -> Result<WhoamiFormat, ConfigError> {
        let name = format
            .as_ref()
            .map_or(defaults::WHOAMI_FORMAT, |f| f.get_ref().as_str());
        let html = match name {
            "json" => false,
            "html" => true,
            other => {
                let problem = Problem::UnknownFormat {
                    value: other.to_string(),
                    expected: "\"json\" or \"html\"",
                };
                let span = format.as_ref().map(Spanned::span).unwrap_or_default();
                return Err(self.err(span, keys.format, problem));
            }
        };
        if !html {
            let given = picks.iter().find_map(|(field, selector, pattern)| {
                let (value, kind) = match (selector, pattern) {
                    (Some(s), _) => (s, "selector"),
                    (None, Some(p)) => (p, "pattern"),
                    (None, None) => return None,
                };
                Some((value.span(), format!("{}.{field}_{kind}", keys.table)))
            });
            return match given {
                Some((span, key)) => Err(self.err(span, key, Problem::AppliesOnlyWith(keys.needs))),
                None => Ok(WhoamiFormat::Json),
            };
        }
        let [user, roles, email] = picks;
        let Some(user) = self.html_pick(user, keys.table)? else {
            let span = format.as_ref().map(Spanned::span).unwrap_or_default();
            return Err(self.err(span, keys.format, Problem::HtmlWithoutUser));
        };
        Ok(WhoamiFormat::Html(HtmlIdentity {
            user,
            roles: self.html_pick(roles, keys.table)?,
            email: self.html_pick(email, keys.table)?,
        }))
    }

    /// One field's selector or pattern, compiled; `None` when neither is given.
    fn html_pick(
        &self,
        (field, selector, pattern): (
            &'static str,
            &Option<Spanned<String>>,
            &Option<Spanned<String>>,
        ),
        table: &str,
    ) -> Result<Option<HtmlPick>, ConfigError> {
        let key = |kind: &str| format!("{table}.{field}_{kind}");
        match (selector, pattern) {
            (Some(_), Some(p)) => Err(self.err(
                p.span(),
                key("pattern"),
                Problem::SelectorAndPattern { field },
            )),
            (Some(s), None) => scraper::Selector::parse(s.get_ref())
                .map(|s| Some(HtmlPick::Selector(s)))
                .map_err(|e| {
                    let problem = Problem::BadSelector(e.to_string());
                    self.err(s.span(), key("selector"), problem)
                }),
            (None, Some(p)) => {
                let regex = regex::Regex::new(p.get_ref()).map_err(|e| {
                    let problem = Problem::BadPattern(e.to_string());
                    self.err(p.span(), key("pattern"), problem)
                })?;
                // Group 0 is the whole match.
                if regex.captures_len() < 2 {
                    return Err(self.err(p.span(), key("pattern"), Problem::PatternWithoutGroup));
                }
                Ok(Some(HtmlPick::Pattern(regex)))
            }
            (None, None) => Ok(None),
        }
    }
}
