//! Query parameters, read as kube-apiserver reads them (apimachinery's
//! `Convert_Slice_string_To_*` behind its parameter codec):
//!
//! - a parameter given twice counts once, with its first value;
//! - booleans (`watch`, `allowWatchBookmarks`, `force`, `follow`, ...):
//!   absent, `0` or any case of `false` is false; anything else, `True`,
//!   `yes` and the empty string included, is true;
//! - integers (`limit`, `timeoutSeconds`, `gracePeriodSeconds`,
//!   `tailLines`, ...) as Go's `strconv.ParseInt`, a bad (or empty) one
//!   refused with Go's message (400 BadRequest);
//! - strings: an empty value is no value;
//! - unknown parameters are ignored.

use crate::error::{ApiError, Result};

/// A request's query string, parsed once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=x%20y`; `+` is a space, as in forms.
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The first value given for `name`, even an empty one.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A string parameter: its first value, unless empty.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// A boolean parameter (see the module's doc).
    pub fn flag(&self, name: &str) -> bool {
        match self.raw(name) {
            None => false,
            Some(v) => v != "0" && !v.eq_ignore_ascii_case("false"),
        }
    }

    /// An integer parameter; `None` when absent. Given but empty is an
    /// error, as Go's `ParseInt("")` is.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(text) => parse_int(text).map(Some).map_err(ApiError::bad_request),
        }
    }

    /// Every (name, value) pair in order, repeats included.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Go's `strconv.ParseInt(text, 10, 64)`, with its error messages.
pub fn parse_int(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_quote(text)
        ));
    }
    text.parse::<i64>().map_err(|_| {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(text)
        )
    })
}

/// A string as Go's `%q` writes it (enough for query values).
fn go_quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_read_as_kube_apiserver_reads_them() {
        let cases = [
            ("", false),
            ("watch=true", true),
            ("watch=True", true),
            ("watch=TRUE", true),
            ("watch=1", true),
            ("watch=t", true),
            ("watch=yes", true),
            ("watch=", true),
            ("watch", true),
            ("watch=false", false),
            ("watch=False", false),
            ("watch=FALSE", false),
            ("watch=0", false),
            ("watch=false&watch=true", false),
            ("watch=true&watch=false", true),
            ("other=true", false),
        ];
        for (raw, expected) in cases {
            assert_eq!(Query::parse(raw).flag("watch"), expected, "{raw:?}");
        }
    }

    #[test]
    fn integers_are_read_as_go_parses_them() {
        let ok = [
            ("limit=500", Some(500)),
            ("limit=%2B7", Some(7)),
            ("limit=-1", Some(-1)),
            ("limit=007", Some(7)),
            ("", None),
            ("limit=3&limit=x", Some(3)),
        ];
        for (raw, expected) in ok {
            assert_eq!(Query::parse(raw).int("limit").unwrap(), expected, "{raw:?}");
        }
        let refused = [
            (
                "limit=abc",
                "strconv.ParseInt: parsing \"abc\": invalid syntax",
            ),
            (
                "limit=1.5",
                "strconv.ParseInt: parsing \"1.5\": invalid syntax",
            ),
            (
                "limit=%2010",
                "strconv.ParseInt: parsing \" 10\": invalid syntax",
            ),
            ("limit=-", "strconv.ParseInt: parsing \"-\": invalid syntax"),
            // `+` is a space in a query string, for Go as here.
            (
                "limit=+7",
                "strconv.ParseInt: parsing \" 7\": invalid syntax",
            ),
            ("limit=", "strconv.ParseInt: parsing \"\": invalid syntax"),
            (
                "limit=99999999999999999999",
                "strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
            ),
        ];
        for (raw, message) in refused {
            let err = Query::parse(raw).int("limit").unwrap_err();
            assert_eq!(err.code, 400, "{raw:?}");
            assert_eq!(err.message, message, "{raw:?}");
        }
    }

    #[test]
    fn strings_take_the_first_non_empty_value_and_decode_escapes() {
        let q = Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&fieldManager=&x=1&x=2");
        assert_eq!(q.string("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.string("fieldManager"), None);
        assert_eq!(q.raw("fieldManager"), Some(""));
        assert_eq!(q.string("x"), Some("1"));
        assert_eq!(q.string("missing"), None);
        assert_eq!(q.pairs().count(), 4);
    }
}
