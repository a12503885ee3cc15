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

use crate::error::{ApiError, Cause, Result};

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

/// kube-apiserver's `ValidateListOptions` (the WatchList feature on, as in
/// Kubernetes 1.32): what a list or watch may combine. A violation is a
/// 422 about `ListOptions.meta.k8s.io`.
pub fn validate_list_options(q: &Query) -> Result<()> {
    let mut causes = Vec::new();
    let rv_match = q.string("resourceVersionMatch");
    let send_initial = q.raw("sendInitialEvents").is_some();
    let continuing = q.string("continue").is_some();
    if q.flag("watch") {
        if send_initial && rv_match != Some("NotOlderThan") {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(m) = rv_match {
            if !send_initial {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if m != "NotOlderThan" {
                causes.push(Cause::unsupported(
                    "resourceVersionMatch",
                    m,
                    &["NotOlderThan"],
                ));
            }
            if continuing {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if let Some(m) = rv_match {
            if q.string("resourceVersion").is_none() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if continuing {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            match m {
                "Exact" if q.string("resourceVersion") == Some("0") => {
                    causes.push(Cause::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ))
                }
                "Exact" | "NotOlderThan" => {}
                other => causes.push(Cause::unsupported(
                    "resourceVersionMatch",
                    other,
                    &["Exact", "NotOlderThan", ""],
                )),
            }
        }
        if send_initial {
            causes.push(Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid_kind(
            "meta.k8s.io",
            "ListOptions",
            "",
            causes,
        ));
    }
    // A resourceVersion is a number (etcd's revision), or empty.
    if let Some(rv) = q.string("resourceVersion") {
        if rv.parse::<u64>().is_err() {
            return Err(ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {}: strconv.ParseUint: parsing {}: invalid syntax",
                go_quote(rv),
                go_quote(rv)
            )));
        }
    }
    Ok(())
}

/// The write a request's options are for, as kube-apiserver names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
    /// A patch; `true` for server-side apply.
    Patch {
        apply: bool,
    },
    Delete,
}

/// kube-apiserver's `ValidateCreateOptions`, `ValidateUpdateOptions`,
/// `ValidatePatchOptions` and the dry-run part of `ValidateDeleteOptions`,
/// on the query: a violation is a 422 about `<Kind>Options.meta.k8s.io`.
pub fn validate_write_options(q: &Query, write: Write) -> Result<()> {
    let mut causes = Vec::new();
    let dry_run: Vec<&str> = q
        .pairs()
        .filter(|(k, _)| *k == "dryRun")
        .map(|(_, v)| v)
        .collect();
    if dry_run.iter().any(|v| *v != "All") {
        let shown = dry_run
            .iter()
            .map(|v| go_quote(v))
            .collect::<Vec<_>>()
            .join(", ");
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "dryRun".into(),
            message: format!("Unsupported value: []string{{{shown}}}: supported values: \"All\""),
        });
    }
    if write != Write::Delete {
        if let Some(manager) = q.raw("fieldManager") {
            if manager.len() > 128 {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: "fieldManager".into(),
                    message: "Too long: may not be more than 128 bytes".into(),
                });
            } else if manager.chars().any(char::is_control) {
                causes.push(Cause::invalid(
                    "fieldManager",
                    &serde_json::json!(manager),
                    "must only contain printable characters",
                ));
            }
        }
        if let Some(v) = q.raw("fieldValidation") {
            if !["", "Ignore", "Warn", "Strict"].contains(&v) {
                causes.push(Cause::unsupported(
                    "fieldValidation",
                    v,
                    &["", "Ignore", "Strict", "Warn"],
                ));
            }
        }
    }
    match write {
        Write::Patch { apply: false } if q.raw("force").is_some() => {
            causes.push(Cause::forbidden(
                "force",
                "may not be specified for non-apply patch",
            ));
        }
        Write::Patch { apply: true } if q.string("fieldManager").is_none() => {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: "fieldManager".into(),
                message: "Required value: is required for apply patch".into(),
            });
        }
        _ => {}
    }
    if causes.is_empty() {
        return Ok(());
    }
    let kind = match write {
        Write::Create => "CreateOptions",
        Write::Update => "UpdateOptions",
        Write::Patch { .. } => "PatchOptions",
        Write::Delete => "DeleteOptions",
    };
    Err(ApiError::invalid_kind("meta.k8s.io", kind, "", causes))
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
    fn list_options_combine_as_kube_apiserver_allows() {
        let allowed = [
            "",
            "resourceVersion=5",
            "resourceVersion=5&resourceVersionMatch=Exact",
            "resourceVersion=0&resourceVersionMatch=NotOlderThan",
            "watch=1&resourceVersion=7",
            "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            "watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
        ];
        for raw in allowed {
            assert!(validate_list_options(&Query::parse(raw)).is_ok(), "{raw:?}");
        }
        let refused = [
            ("resourceVersionMatch=Exact", 422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"),
            ("resourceVersion=0&resourceVersionMatch=Exact", 422, "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""),
            ("resourceVersion=1&resourceVersionMatch=Bogus", 422, "resourceVersionMatch: Unsupported value: \"Bogus\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
            ("resourceVersion=1&resourceVersionMatch=Exact&continue=abc", 422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided"),
            ("sendInitialEvents=true", 422, "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"),
            ("watch=true&sendInitialEvents=true", 422, "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
            ("watch=true&resourceVersionMatch=NotOlderThan", 422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
            ("resourceVersion=abc", 400, "resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \"abc\": invalid syntax"),
            ("watch=1&resourceVersion=-3", 400, "resourceVersion: Invalid value: \"-3\": strconv.ParseUint: parsing \"-3\": invalid syntax"),
        ];
        for (raw, code, message) in refused {
            let err = validate_list_options(&Query::parse(raw)).unwrap_err();
            assert_eq!(err.code, code, "{raw:?}");
            assert!(err.message.ends_with(message), "{raw:?}: {}", err.message);
            if code == 422 {
                assert!(
                    err.message
                        .starts_with("ListOptions.meta.k8s.io \"\" is invalid: "),
                    "{}",
                    err.message
                );
            }
        }
    }

    #[test]
    fn write_options_are_validated_as_kube_apiserver_does() {
        let allowed = [
            ("", Write::Create),
            (
                "dryRun=All&fieldManager=me&fieldValidation=Strict",
                Write::Create,
            ),
            ("fieldValidation=", Write::Update),
            ("dryRun=All&dryRun=All", Write::Delete),
            ("fieldManager=me&force=true", Write::Patch { apply: true }),
            ("force=true", Write::Create),
        ];
        for (raw, write) in allowed {
            assert!(
                validate_write_options(&Query::parse(raw), write).is_ok(),
                "{raw:?}"
            );
        }
        let long = format!("fieldManager={}", "m".repeat(129));
        let refused = [
            ("dryRun=Bogus", Write::Create, "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Bogus\"}: supported values: \"All\""),
            ("dryRun=All&dryRun=x", Write::Delete, "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"All\", \"x\"}: supported values: \"All\""),
            ("fieldValidation=Loose", Write::Update, "UpdateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""),
            (long.as_str(), Write::Create, "CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes"),
            ("fieldManager=a%07b", Write::Update, "UpdateOptions.meta.k8s.io \"\" is invalid: fieldManager: Invalid value: \"a\\u{7}b\": must only contain printable characters"),
            ("force=true", Write::Patch { apply: false }, "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"),
            ("", Write::Patch { apply: true }, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"),
        ];
        for (raw, write, message) in refused {
            let err = validate_write_options(&Query::parse(raw), write).unwrap_err();
            assert_eq!((err.code, err.message.as_str()), (422, message), "{raw:?}");
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
