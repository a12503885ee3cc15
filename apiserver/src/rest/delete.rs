//! DELETE of one object and of collections: preconditions, graceful pod
//! deletion, finalizers and deletionTimestamp, namespace termination.

use http::StatusCode;
use serde_json::{json, Value};

use super::read::{list_objects, load, Selectors, Stored};
use super::Ctx;
use crate::error::{ApiError, Cause, Result};
use crate::object::{meta_mut, now};
use crate::server::Api;
use crate::storage::{Guard, Op};

/// Longest grace period honoured (ten years); longer ones are cut to it.
const MAX_GRACE_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// DeleteOptions from the body and the query (the query wins, as kubectl
/// sends both forms depending on the version).
#[derive(Debug, Default)]
struct Options {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    /// `dryRun: [All]` in the body (the query form is `Ctx::dry_run`).
    dry_run: bool,
}

fn options(ctx: &Ctx, body: &[u8]) -> Result<Options> {
    let mut options = Options::default();
    let mut body_value = None;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value = super::decode(ctx, body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message)))?;
        options.grace_period = value.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.propagation = value
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        options.uid = value
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        options.resource_version = value
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        options.dry_run = value
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
        body_value = Some(value);
    }
    let mut orphan = match &body_value {
        Some(value) => value.get("orphanDependents").and_then(Value::as_bool),
        None => None,
    };
    if let Some(g) = ctx.query.int("gracePeriodSeconds")? {
        options.grace_period = Some(g);
    }
    if let Some(p) = ctx.param("propagationPolicy") {
        options.propagation = Some(p.to_string());
    }
    if ctx.query.raw("orphanDependents").is_some() {
        orphan = Some(ctx.flag("orphanDependents"));
    }
    // kube-apiserver's ValidateDeleteOptions.
    let mut causes = Vec::new();
    if let (Some(_), Some(p)) = (orphan, options.propagation.as_deref()) {
        causes.push(Cause::invalid(
            "propagationPolicy",
            &json!(p),
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    if let Some(p) = options.propagation.as_deref() {
        if !["Orphan", "Background", "Foreground"].contains(&p) {
            causes.push(Cause::unsupported(
                "propagationPolicy",
                p,
                &["Foreground", "Background", "Orphan", "nil"],
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid_kind(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            causes,
        ));
    }
    // The deprecated form: orphanDependents=true is propagationPolicy=Orphan.
    if orphan == Some(true) {
        options.propagation = Some("Orphan".into());
    }
    Ok(options)
}

pub async fn delete(api: &Api, ctx: &Ctx, body: bytes::Bytes) -> Result<(StatusCode, Value)> {
    if ctx.sub.is_some() {
        return Err(ApiError::method_not_allowed("DELETE"));
    }
    let name = ctx.name.clone().unwrap_or_default();
    let given = options(ctx, &body)?;
    let unconditional = given.uid.is_none() && given.resource_version.is_none();
    // Without preconditions a concurrent change (a status update, say) is
    // not the client's problem: delete what is there now.
    for attempt in 0.. {
        let current = load(api, ctx, &name).await?;
        match delete_loaded(api, ctx, current, &body).await {
            Err(e) if e.reason == "Conflict" && unconditional && attempt < 5 => continue,
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

pub async fn delete_loaded(
    api: &Api,
    ctx: &Ctx,
    current: Stored,
    body: &[u8],
) -> Result<(StatusCode, Value)> {
    let options = options(ctx, body)?;
    let dry_run = options.dry_run || ctx.dry_run();
    let name = crate::object::name(&current.object).to_string();
    crate::rbac::node::admit(
        ctx.user.as_ref(),
        ctx.storage(),
        ctx.sub,
        Some(&current.object),
        None,
    )?;
    if let Some(uid) = &options.uid {
        if current
            .object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            != Some(uid)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    ctx.resource.qualified(),
                    current.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()),
            ));
        }
    }
    if let Some(rv) = &options.resource_version {
        if *rv != current.revision.to_string() {
            return Err(ApiError::conflict(ctx.resource, &name));
        }
    }
    let resource = ctx.storage();
    let mut object = current.object.clone();
    let already_deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());

    if resource.kind == "Namespace" && resource.group.is_empty() {
        if ["default", "kube-system", "kube-public"].contains(&name.as_str()) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        if !already_deleting {
            meta_mut(&mut object).insert("deletionTimestamp".into(), json!(now()));
            object["status"] = json!({"phase": "Terminating"});
            if dry_run {
                return Ok((StatusCode::OK, object));
            }
            let stored = write_back(api, ctx, &current, object).await?;
            api.namespaces_changed.notify_one();
            return Ok((StatusCode::OK, stored));
        }
        return Ok((StatusCode::OK, object));
    }

    // A pod that a node runs is deleted gracefully: it gets a deletion
    // timestamp, its agent stops it and then deletes it with grace 0.
    let grace = if resource.kind == "Pod" && resource.group.is_empty() {
        let scheduled = object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            object.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let default = object
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        if scheduled && !finished {
            // Bounded so that now + grace stays a valid time.
            options
                .grace_period
                .unwrap_or(default)
                .clamp(0, MAX_GRACE_SECONDS)
        } else {
            0
        }
    } else {
        0
    };

    // Foreground and Orphan deletion wait for the garbage collector: it
    // deletes (or releases) the dependents, then removes this finalizer.
    let mut finalizers = finalizers;
    if !already_deleting {
        let finalizer = match options.propagation.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(finalizer) = finalizer {
            let meta = meta_mut(&mut object);
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(items) = list.as_array_mut() {
                if !items.iter().any(|f| f == finalizer) {
                    items.push(json!(finalizer));
                }
            }
            finalizers = true;
        }
    }
    if grace > 0 || finalizers {
        if already_deleting {
            // A second delete may only shorten the grace period.
            let current_grace = object
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if grace >= current_grace {
                return Ok((StatusCode::OK, object));
            }
        }
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        let meta = meta_mut(&mut object);
        meta.insert(
            "deletionTimestamp".into(),
            json!(crate::object::format_time(at)),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if dry_run {
            return Ok((StatusCode::OK, object));
        }
        let stored = write_back(api, ctx, &current, object).await?;
        return Ok((StatusCode::OK, stored));
    }
    if dry_run {
        return Ok((StatusCode::OK, object));
    }
    let removed = remove(api, ctx, current, object).await?;
    Ok((StatusCode::OK, removed))
}

/// Writes a deletion mark over `current`.
async fn write_back(api: &Api, ctx: &Ctx, current: &Stored, object: Value) -> Result<Value> {
    let name = crate::object::name(&object).to_string();
    let key = ctx.key(&name);
    let ops = vec![Op::Put(key.clone(), super::write::encode(&object)?)];
    let guards = vec![Guard::ModRevision(key, current.revision)];
    super::write::commit(api, ctx, &name, guards, ops, object).await
}

/// Removes the object from the store (and what was allocated for it).
pub async fn remove(api: &Api, ctx: &Ctx, current: Stored, object: Value) -> Result<Value> {
    let name = crate::object::name(&current.object).to_string();
    let key = ctx.key(&name);
    let mut ops = vec![Op::Delete(key.clone())];
    ops.extend(crate::allocate::on_delete(ctx.storage(), &current.object));
    let guards = vec![Guard::ModRevision(key, current.revision)];
    super::write::commit(api, ctx, &name, guards, ops, object).await
}

pub async fn delete_collection(
    api: &Api,
    ctx: &Ctx,
    body: bytes::Bytes,
) -> Result<(StatusCode, Value)> {
    let selectors = Selectors::parse(ctx)?;
    let (items, revision, _) = list_objects(api, ctx, &selectors, 0, None).await?;
    let mut deleted = Vec::new();
    for item in items {
        let name = crate::object::name(&item).to_string();
        let revision: i64 = item
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or_default();
        let item_ctx = Ctx {
            resource: ctx.resource,
            namespace: crate::object::namespace(&item).map(String::from),
            name: Some(name),
            sub: None,
            query: ctx.query.clone(),
            accept: ctx.accept.clone(),
            content_type: ctx.content_type.clone(),
            method: ctx.method.clone(),
            warnings: Vec::new(),
            user_agent: ctx.user_agent.clone(),
            user: ctx.user.clone(),
        };
        let mut current = Stored {
            object: item,
            revision,
            stale: false,
        };
        // Changed since the list (a status update, say): delete what is
        // there now, as Kubernetes retries each item; gone: nothing to do.
        for attempt in 0.. {
            match delete_loaded(api, &item_ctx, current, &body).await {
                Ok((_, object)) => deleted.push(object),
                Err(e) if e.code == 409 && attempt < 5 => {
                    match load(api, &item_ctx, item_ctx.name.as_deref().unwrap_or_default()).await {
                        Ok(now) => {
                            current = now;
                            continue;
                        }
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
            break;
        }
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": format!("{}List", ctx.resource.kind),
            "apiVersion": ctx.resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        }),
    ))
}
