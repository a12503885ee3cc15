//! GET of one object and of lists (label and field selectors, limit and
//! continue, resourceVersion semantics).

use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{ApiError, Result};
use crate::resources::{Resource, Sub};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Api;
use crate::storage::prefix_end;

/// An object as stored, with the revision that last wrote it.
pub struct Stored {
    pub object: Value,
    pub revision: i64,
    /// Stored otherwise than a write now would store it (an older
    /// encryption key): an unchanged update still writes it.
    pub stale: bool,
}

/// Decodes a stored value, stamping `metadata.resourceVersion`.
pub fn decode_stored(value: &[u8], revision: i64) -> Result<Value> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("a stored object is not JSON: {e}")))?;
    crate::object::meta_mut(&mut object)
        .insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(object)
}

pub async fn load(api: &Api, ctx: &Ctx, name: &str) -> Result<Stored> {
    match api.store.get_fresh(&ctx.key(name)).await? {
        Some((kv, stale)) => Ok(Stored {
            object: decode_stored(&kv.value, kv.mod_revision)?,
            revision: kv.mod_revision,
            stale,
        }),
        None => Err(ApiError::not_found(ctx.resource, name)),
    }
}

pub async fn get(api: &Api, ctx: &Ctx) -> Result<(StatusCode, Value)> {
    let name = ctx.name.as_deref().unwrap_or_default();
    let stored = load(api, ctx, name).await?;
    let object = match ctx.sub {
        Some(Sub::Scale) => scale_of(ctx.storage(), &stored.object),
        Some(Sub::Status) | Some(Sub::Approval) | None => stored.object,
        Some(_) => return Err(ApiError::method_not_allowed("GET")),
    };
    Ok((StatusCode::OK, object))
}

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_of(resource: &Resource, object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let selector = object
        .pointer("/spec/selector")
        .map(|s| {
            if resource.kind == "ReplicationController" {
                s.as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            } else {
                crate::table::selector_string(s)
            }
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    #[serde(rename = "rv")]
    revision: i64,
    #[serde(rename = "start")]
    start: String,
}

pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(ctx: &Ctx) -> Result<Selectors> {
        let labels = LabelSelector::parse(ctx.param("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(ctx.param("fieldSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    /// True when no selector was given: every object matches.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// Reads the objects a list or watch addresses, at `revision` (0 = now).
pub async fn list_objects(
    api: &Api,
    ctx: &Ctx,
    selectors: &Selectors,
    limit: i64,
    from: Option<(i64, String)>,
) -> Result<(Vec<Value>, i64, Option<String>)> {
    let prefix = ctx.storage().prefix(ctx.namespace.as_deref());
    let (mut revision, mut start) = match from {
        Some((revision, start)) => (revision, start.into_bytes()),
        None => (0, prefix.as_bytes().to_vec()),
    };
    // A single name is a direct read, not a scan.
    let one_key = !ctx.storage().namespaced || ctx.namespace.is_some();
    if let Some(name) = selectors
        .fields
        .required("metadata.name")
        .filter(|_| one_key)
    {
        if limit == 0 && revision == 0 {
            let key = ctx.key(name);
            let mut items = Vec::new();
            let listed = api.store.list(&key, None, 1, 0).await?;
            for kv in listed.kvs.iter().filter(|kv| kv.key == key.as_bytes()) {
                let object = decode_stored(&kv.value, kv.mod_revision)?;
                if selectors.matches(&object) {
                    items.push(object);
                }
            }
            return Ok((items, listed.revision, None));
        }
    }
    let end = prefix_end(prefix.as_bytes());
    let batch = if limit > 0 { limit.max(100) } else { 0 };
    let mut items = Vec::new();
    loop {
        let listed = api
            .store
            .list(&prefix, Some(&start), batch, revision)
            .await
            .map_err(|e| match e {
                crate::storage::Error::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => other.into(),
            })?;
        if revision == 0 {
            revision = listed.revision;
        }
        let mut last = None;
        for kv in &listed.kvs {
            last = Some(kv.key.clone());
            if kv.key.as_slice() >= end.as_slice() {
                break;
            }
            let object = decode_stored(&kv.value, kv.mod_revision)?;
            if selectors.matches(&object) {
                items.push(object);
                if limit > 0 && items.len() as i64 >= limit {
                    let mut next = kv.key.clone();
                    next.push(0);
                    let more_left =
                        listed.more || listed.kvs.last().map(|k| &k.key) != Some(&kv.key);
                    let token = more_left.then(|| {
                        let c = Continue {
                            revision,
                            start: String::from_utf8_lossy(&next).into_owned(),
                        };
                        base64::engine::general_purpose::STANDARD
                            .encode(serde_json::to_vec(&c).unwrap_or_default())
                    });
                    return Ok((items, revision, token));
                }
            }
        }
        match (listed.more, last) {
            (true, Some(mut key)) => {
                key.push(0);
                start = key;
            }
            _ => return Ok((items, revision, None)),
        }
    }
}

pub async fn list(api: &Api, ctx: &Ctx) -> Result<(StatusCode, Value)> {
    if ctx.sub.is_some() {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let selectors = Selectors::parse(ctx)?;
    let limit = ctx.query.int("limit")?.unwrap_or(0).max(0);
    let from = match ctx.param("continue") {
        Some(token) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            let c: Continue = serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            let prefix = ctx.storage().prefix(ctx.namespace.as_deref());
            if !c.start.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "continue token is for another resource",
                ));
            }
            Some((c.revision, c.start))
        }
        None => match (
            ctx.param("resourceVersion"),
            ctx.param("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => {
                let revision = rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?;
                Some((revision, ctx.storage().prefix(ctx.namespace.as_deref())))
            }
            _ => None,
        },
    };
    let (items, revision, token) = list_objects(api, ctx, &selectors, limit, from).await?;
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = token {
        metadata["continue"] = json!(token);
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": format!("{}List", ctx.resource.kind),
            "apiVersion": ctx.resource.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}
