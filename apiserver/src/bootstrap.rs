//! Bootstrap tokens (`--enable-bootstrap-token-auth`): the short-lived
//! credentials a joining node presents before it has its own, as
//! Kubernetes keeps them. A token `<id>.<secret>` (`[a-z0-9]{6}` and
//! `[a-z0-9]{16}`) is valid while the Secret `kube-system/bootstrap-token-<id>`
//! of type `bootstrap.kubernetes.io/token` holds the same `token-id` and
//! `token-secret`, says `usage-bootstrap-authentication: "true"`, is not
//! being deleted and its `expiration` (RFC 3339), if any, has not passed.
//! The user is `system:bootstrap:<id>`, in `system:bootstrappers` and the
//! groups of `auth-extra-groups` (each `system:bootstrappers:...`).

use serde_json::Value;

use crate::server::{Api, User};

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const GROUP: &str = "system:bootstrappers";
/// The extra group of the tokens nodes join with (`shoal token create`),
/// bound to ask for node certificates (kubeadm's
/// `system:bootstrappers:kubeadm:default-node-token`).
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:shoal:default-node-token";

/// The id and secret of a token shaped as a bootstrap token.
fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let fits = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (fits(id, 6) && fits(secret, 16)).then_some((id, secret))
}

/// A data field of a Secret, decoded.
fn field(secret: &Value, name: &str) -> Option<String> {
    use base64::Engine;
    let encoded = secret.pointer(&format!("/data/{name}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether two strings are equal, in time that does not depend on where
/// they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `group` may be given by `auth-extra-groups`.
fn extra_group_allowed(group: &str) -> bool {
    group
        .strip_prefix("system:bootstrappers:")
        .is_some_and(|rest| {
            !rest.is_empty()
                && rest.len() <= 256
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
                && !rest.ends_with([':', '-'])
        })
}

/// The user `secret` (as stored) makes of the token `id.token_secret`,
/// at `now` (seconds since the epoch).
pub fn user_of(secret: &Value, id: &str, token_secret: &str, now: i64) -> Option<User> {
    if secret.pointer("/type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || secret.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    if !same(&field(secret, "token-secret")?, token_secret)
        || field(secret, "token-id")? != id
        || field(secret, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(expiration) = field(secret, "expiration").filter(|e| !e.is_empty()) {
        let expires = expiration.parse::<jiff::Timestamp>().ok()?;
        if expires.as_second() <= now {
            return None;
        }
    }
    let mut groups = vec![GROUP.to_string()];
    if let Some(extra) = field(secret, "auth-extra-groups") {
        for group in extra.split(',').filter(|g| !g.is_empty()) {
            if !extra_group_allowed(group) {
                tracing::warn!(
                    token = %id,
                    %group,
                    "a bootstrap token's auth-extra-groups names a group outside system:bootstrappers:; the token is refused"
                );
                return None;
            }
            groups.push(group.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Some(User {
        name: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups,
    })
}

/// The user a bootstrap token stands for, if it is one and valid.
pub async fn authenticate(api: &Api, token: &str) -> Option<User> {
    let (id, token_secret) = parse(token)?;
    let secrets = crate::resources::served("", "v1", "secrets");
    let kv = api
        .store
        .get(&secrets.key(Some("kube-system"), &format!("bootstrap-token-{id}")))
        .await
        .ok()??;
    let secret: Value = serde_json::from_slice(&kv.value).ok()?;
    user_of(
        &secret,
        id,
        token_secret,
        jiff::Timestamp::now().as_second(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn secret(fields: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        json!({
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE,
            "data": data,
        })
    }

    const VALID: [(&str, &str); 3] = [
        ("token-id", "abcdef"),
        ("token-secret", "0123456789abcdef"),
        ("usage-bootstrap-authentication", "true"),
    ];

    #[test]
    fn tokens_are_shaped_as_kubernetes_bootstrap_tokens() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for not in [
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "a.b.c",
            "",
        ] {
            assert_eq!(parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_valid_token_is_a_bootstrapper() {
        let user = user_of(&secret(&VALID), "abcdef", "0123456789abcdef", 0).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            ["system:bootstrappers", "system:authenticated"]
        );
        // A wrong secret, another id, no usage, or a Secret of another type.
        assert!(user_of(&secret(&VALID), "abcdef", "0123456789abcdee", 0).is_none());
        assert!(user_of(&secret(&VALID), "abcdeg", "0123456789abcdef", 0).is_none());
        assert!(user_of(&secret(&VALID[..2]), "abcdef", "0123456789abcdef", 0).is_none());
        let mut opaque = secret(&VALID);
        opaque["type"] = json!("Opaque");
        assert!(user_of(&opaque, "abcdef", "0123456789abcdef", 0).is_none());
    }

    #[test]
    fn expiry_and_extra_groups() {
        let mut fields = VALID.to_vec();
        fields.push(("expiration", "2030-01-01T00:00:00Z"));
        fields.push(("auth-extra-groups", "system:bootstrappers:shoal:nodes"));
        let before = "2029-12-31T23:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        let user = user_of(&secret(&fields), "abcdef", "0123456789abcdef", before).unwrap();
        assert_eq!(user.groups[1], "system:bootstrappers:shoal:nodes");
        assert!(user_of(
            &secret(&fields),
            "abcdef",
            "0123456789abcdef",
            before + 7200
        )
        .is_none());
        let mut escalating = VALID.to_vec();
        escalating.push(("auth-extra-groups", "system:masters"));
        assert!(user_of(&secret(&escalating), "abcdef", "0123456789abcdef", 0).is_none());
    }
}
