//! Create, update, patch and the POST subresources (binding, eviction).
//!
//! Every write goes through `prepare` (decode into the kind's type, strict
//! field validation, defaults, validation) and lands with a guarded `Txn`:
//! create needs the key absent, update needs the revision the change was
//! computed from, so concurrent writers get 409 Conflict instead of losing
//! each other's changes.

use http::StatusCode;
use serde_json::{json, Value};

use super::read::{load, scale_of, Stored};
use super::{decode, Ctx};
use crate::error::{ApiError, Cause, Result};
use crate::object::{meta_mut, meta_str, now, set_path, uid};
use crate::resources::{Resource, Sub};
use crate::server::Api;
use crate::storage::{Guard, Op, Written};
use crate::{defaults, validation};

/// Server-side apply records its own managed fields.
fn is_apply(ctx: &Ctx) -> bool {
    ctx.content_type.starts_with("application/apply-patch")
}

/// Kinds whose `metadata.generation` counts spec changes.
fn tracks_generation(resource: &Resource) -> bool {
    matches!(
        resource.kind,
        "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
            | "NetworkPolicy"
            | "Ingress"
            | "HorizontalPodAutoscaler"
            | "PodDisruptionBudget"
    )
}

/// Everything but metadata and status: what a generation counts.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// Fields present in `given` that the kind's type does not have.
fn unknown_fields(given: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (field, value) in g {
                let at = if path.is_empty() {
                    field.clone()
                } else {
                    format!("{path}.{field}")
                };
                match k.get(field) {
                    Some(inner) => unknown_fields(value, inner, &at, out),
                    None if value.is_null() => {}
                    None => out.push(at),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (a, b)) in g.iter().zip(k).enumerate() {
                unknown_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes `object` through the kind's type: wrongly typed fields are a
/// 400, missing required fields a 422, unknown fields handled per
/// `fieldValidation` (Strict: 400, Warn: a warning, Ignore: dropped).
pub fn normalize(ctx: &mut Ctx, resource: &Resource, object: Value) -> Result<Value> {
    let name = meta_str(&object, "name").unwrap_or_default().to_string();
    let normalized = (resource.normalize)(object.clone()).map_err(|e| {
        if let Some(field) = e
            .message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            let path = if e.path.is_empty() {
                field.to_string()
            } else {
                format!("{}.{field}", e.path)
            };
            return ApiError::invalid(resource, &name, vec![Cause::required(path)]);
        }
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.path)
        };
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {at}{message}",
            kind = resource.kind,
            version = resource.version,
            message = e.message,
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(&object, &normalized, "", &mut unknown);
    if !unknown.is_empty() {
        match ctx.param("fieldValidation").unwrap_or("Warn") {
            "Strict" => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            "Ignore" => {}
            _ => ctx
                .warnings
                .extend(unknown.iter().map(|f| format!("unknown field \"{f}\""))),
        }
    }
    Ok(normalized)
}

/// Checks apiVersion/kind against the URL and fills them in.
fn check_type(ctx: &Ctx, object: &mut Value) -> Result<()> {
    let resource = ctx.resource;
    let expected = resource.api_version();
    if let Some(given) = object.get("apiVersion").and_then(Value::as_str) {
        if given != expected {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({expected})"
            )));
        }
    }
    if let Some(given) = object.get("kind").and_then(Value::as_str) {
        if given != resource.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object must be a JSON object"))?;
    map.insert("apiVersion".into(), json!(expected));
    map.insert("kind".into(), json!(resource.kind));
    Ok(())
}

fn check_namespace(ctx: &Ctx, object: &mut Value) -> Result<()> {
    let meta = meta_mut(object);
    if !ctx.resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(ns) = ctx.namespace.as_deref() else {
        return Err(ApiError::bad_request(
            "the namespace of the object must be given in the URL",
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

/// The namespace must exist and not be terminating.
async fn namespace_accepts(api: &Api, ctx: &Ctx, name: &str) -> Result<()> {
    let Some(ns) = ctx.namespace.as_deref().filter(|_| ctx.resource.namespaced) else {
        return Ok(());
    };
    let namespaces = crate::resources::served("", "v1", "namespaces");
    match api.store.get(&namespaces.key(None, ns)).await? {
        None => Err(ApiError::not_found(namespaces, ns)),
        Some(kv) => {
            let object: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        ctx.resource.qualified(),
                        name
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn validate(resource: &Resource, object: &Value) -> Result<()> {
    let mut causes = validation::metadata(resource, object);
    causes.extend(validation::spec(resource, object));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            resource,
            crate::object::name(object),
            causes,
        ))
    }
}

/// The status a kind starts with, whatever the client sent.
fn initial_status(resource: &Resource, object: &mut Value) {
    let map = crate::object::as_object(object);
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            let qos = qos_class(map.get("spec").unwrap_or(&Value::Null));
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        ("", "Namespace" | "Node" | "PersistentVolume" | "PersistentVolumeClaim" | "Service") => {}
        (_, "Event" | "ConfigMap" | "Secret" | "Endpoints" | "ServiceAccount" | "Lease") => {}
        _ if resource.has(Sub::Status) => {
            map.remove("status");
        }
        _ => {}
    }
}

/// The QoS class of a pod spec as written (BestEffort when it does not
/// read as one: validation reports that).
pub fn qos_class(spec: &Value) -> &'static str {
    serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(spec.clone())
        .map_or("BestEffort", |spec| shoal_core::pod::qos_class(&spec))
}

pub async fn create(api: &Api, ctx: &mut Ctx, body: bytes::Bytes) -> Result<(StatusCode, Value)> {
    if ctx.sub.is_some() {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let mut object = decode(ctx, &body)?;
    check_type(ctx, &mut object)?;
    let object = crate::convert::to_storage(ctx.resource, object);
    let created = create_object(api, ctx, object).await?;
    Ok((StatusCode::CREATED, created))
}

/// Creates a decoded object (also the first server-side apply).
pub async fn create_object(api: &Api, ctx: &mut Ctx, mut object: Value) -> Result<Value> {
    let resource = ctx.storage();
    check_namespace(ctx, &mut object)?;
    {
        let meta = meta_mut(&mut object);
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            if let Some(base) = meta.get("generateName").and_then(Value::as_str) {
                let name = format!("{base}{}", crate::object::random_suffix(5));
                meta.insert("name".into(), json!(name));
            }
        }
    }
    let mut object = normalize(ctx, resource, object)?;
    let name = crate::object::name(&object).to_string();
    {
        let meta = meta_mut(&mut object);
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
        meta.insert("uid".into(), json!(uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        if tracks_generation(resource) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    initial_status(resource, &mut object);
    crate::hooks::before_create(resource, &mut object, ctx.user.as_ref());
    if (resource.group, resource.kind) == ("networking.k8s.io", "Ingress") {
        default_ingress_class(api, &mut object).await?;
    }
    defaults::apply(resource, &mut object);
    validate(resource, &object)?;
    crate::rbac::escalation::check_write(api, ctx, resource, &object)?;
    crate::rbac::node::admit(ctx.user.as_ref(), resource, ctx.sub, None, Some(&object))?;
    if !is_apply(ctx) {
        crate::patch::apply::record_update(ctx, None, &mut object);
    }
    namespace_accepts(api, ctx, &name).await?;
    if (resource.group, resource.kind) == ("", "Pod") {
        crate::serviceaccount::admit_pod(api, ctx, &mut object).await?;
    }
    let key = ctx.key(&name);
    let mut guards = vec![Guard::Absent(key.clone())];
    let mut ops = Vec::new();
    let allocations =
        crate::allocate::on_create(api, resource, &mut object, &mut guards, &mut ops).await?;
    if ctx.dry_run() {
        return Ok(object);
    }
    ops.push(Op::Put(key.clone(), encode(&object)?));
    match api.store.txn(&key, guards, ops).await? {
        Written::Ok(revision) => {
            meta_mut(&mut object).insert("resourceVersion".into(), json!(revision.to_string()));
            if (resource.group, resource.kind) == ("", "Namespace") && ctx.user.is_some() {
                // Its kube-root-ca.crt, as kube-controller-manager's
                // root-ca-cert-publisher makes it (pods make it too; the
                // system namespaces get theirs once all are made).
                if let Err(e) = crate::serviceaccount::ensure_root_ca(api, &name).await {
                    tracing::debug!(namespace = %name, error = %e.message, "kube-root-ca.crt not made yet");
                }
            }
            Ok(object)
        }
        Written::Failed(Some(_)) => Err(ApiError::already_exists(ctx.resource, &name)),
        Written::Failed(None) if allocations => Err(ApiError::new(
            409,
            "Conflict",
            "an allocated IP address or port was taken concurrently; please retry",
        )),
        Written::Failed(None) => Err(ApiError::already_exists(ctx.resource, &name)),
    }
}

pub fn encode(object: &Value) -> Result<Vec<u8>> {
    let mut copy = object.clone();
    meta_mut(&mut copy).remove("resourceVersion");
    serde_json::to_vec(&copy).map_err(|e| ApiError::internal(e.to_string()))
}

/// Only the main resource, `status` and `scale` take PUT and PATCH.
fn updatable(ctx: &Ctx) -> Result<()> {
    match ctx.sub {
        None | Some(Sub::Status) | Some(Sub::Scale) | Some(Sub::Approval) => Ok(()),
        Some(_) => Err(ApiError::method_not_allowed(ctx.method.as_str())),
    }
}

pub async fn replace(api: &Api, ctx: &mut Ctx, body: bytes::Bytes) -> Result<(StatusCode, Value)> {
    updatable(ctx)?;
    let mut object = decode(ctx, &body)?;
    let name = ctx.name.clone().unwrap_or_default();
    if ctx.sub == Some(Sub::Scale) {
        let replicas = object
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        let expected = meta_str(&object, "resourceVersion").map(String::from);
        let stored = load(api, ctx, &name).await?;
        let updated = set_replicas(api, ctx, stored, replicas, expected).await?;
        return Ok((StatusCode::OK, scale_of(ctx.storage(), &updated)));
    }
    check_type(ctx, &mut object)?;
    let object = crate::convert::to_storage(ctx.resource, object);
    match meta_str(&object, "name") {
        Some(given) if given != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    let expected = meta_str(&object, "resourceVersion").map(String::from);
    // Without a resourceVersion the client asked for an unconditional
    // update: a concurrent change is retried on, not reported.
    for attempt in 0.. {
        let current = load(api, ctx, &name).await?;
        match update_object(api, ctx, current, object.clone(), expected.clone()).await {
            Err(e) if e.reason == "Conflict" && expected.is_none() && attempt < 5 => continue,
            Err(e) => return Err(e),
            Ok(updated) => return Ok((StatusCode::OK, updated)),
        }
    }
    unreachable!("the loop returns")
}

async fn set_replicas(
    api: &Api,
    ctx: &mut Ctx,
    stored: Stored,
    replicas: Value,
    expected: Option<String>,
) -> Result<Value> {
    let name = crate::object::name(&stored.object).to_string();
    if replicas.as_i64().is_none_or(|n| n < 0) {
        return Err(ApiError::invalid(
            ctx.resource,
            &name,
            vec![Cause::invalid(
                "spec.replicas",
                &replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut object = stored.object.clone();
    object["spec"]["replicas"] = replicas;
    let sub = ctx.sub.take();
    let result = update_object(api, ctx, stored, object, expected).await;
    ctx.sub = sub;
    result
}

/// Writes `object` over `current`, keeping what the client may not change.
pub async fn update_object(
    api: &Api,
    ctx: &mut Ctx,
    current: Stored,
    object: Value,
    expected: Option<String>,
) -> Result<Value> {
    let resource = ctx.storage();
    let name = crate::object::name(&current.object).to_string();
    if let Some(rv) = expected.as_deref().filter(|rv| !rv.is_empty()) {
        if rv != current.revision.to_string() {
            return Err(ApiError::conflict(ctx.resource, &name));
        }
    }
    let mut object = object;
    check_namespace(ctx, &mut object)?;
    let mut object = normalize(ctx, resource, object)?;
    let old = &current.object;
    // What the server owns stays as it was.
    {
        let meta = meta_mut(&mut object);
        meta.insert("name".into(), json!(name));
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old.get("metadata").and_then(|m| m.get(field)) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        meta.remove("resourceVersion");
    }
    match ctx.sub {
        Some(Sub::Status) => {
            // Only the status (and labels/annotations) change through /status.
            let status = object.get("status").cloned();
            let meta = object.get("metadata").cloned();
            let mut merged = old.clone();
            if let Some(status) = status {
                merged["status"] = status;
            } else if let Some(map) = merged.as_object_mut() {
                map.remove("status");
            }
            if let Some(meta) = meta {
                for field in ["labels", "annotations"] {
                    match meta.get(field) {
                        Some(v) => meta_mut(&mut merged).insert(field.into(), v.clone()),
                        None => meta_mut(&mut merged).remove(field),
                    };
                }
            }
            object = merged;
            meta_mut(&mut object).remove("resourceVersion");
        }
        Some(Sub::Approval) => {
            // Only the conditions change through /approval (a
            // CertificateSigningRequest's Approved or Denied).
            let conditions = object.pointer("/status/conditions").cloned();
            let mut merged = old.clone();
            match conditions {
                Some(conditions) => set_path(&mut merged, &["status", "conditions"], conditions),
                None => {
                    if let Some(status) = merged.get_mut("status").and_then(Value::as_object_mut) {
                        status.remove("conditions");
                    }
                }
            }
            object = merged;
            meta_mut(&mut object).remove("resourceVersion");
        }
        _ if resource.has(Sub::Status) => {
            // The main resource cannot change the status.
            match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        _ => {}
    }
    crate::hooks::before_update(resource, old, &mut object);
    defaults::apply(resource, &mut object);
    if tracks_generation(resource) && spec_part(old) != spec_part(&object) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut object).insert("generation".into(), json!(generation + 1));
    }
    let mut causes = validation::metadata(resource, &object);
    causes.extend(validation::spec(resource, &object));
    causes.extend(validation::immutable(resource, old, &object));
    if !causes.is_empty() {
        return Err(ApiError::invalid(ctx.resource, &name, causes));
    }
    crate::rbac::escalation::check_write(api, ctx, resource, &object)?;
    crate::rbac::node::admit(
        ctx.user.as_ref(),
        resource,
        ctx.sub,
        Some(old),
        Some(&object),
    )?;
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let had = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let has = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        // A graceful deletion still running (a pod its node is stopping)
        // is finished by whoever deletes it with grace 0, not here.
        let grace = old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if had && !has && grace == 0 && !ctx.dry_run() {
            // The last finalizer is gone: the object can go.
            return super::delete::remove(api, ctx, current, object).await;
        }
    }
    if !is_apply(ctx) {
        crate::patch::apply::record_update(ctx, Some(old), &mut object);
    }
    let key = ctx.key(&name);
    let mut guards = vec![Guard::ModRevision(key.clone(), current.revision)];
    let mut ops = Vec::new();
    crate::allocate::on_update(api, resource, old, &mut object, &mut guards, &mut ops).await?;
    if ctx.dry_run() || (object == strip_rv(old) && !current.stale) {
        // A dry run writes nothing; nor does an update that changes
        // nothing (Kubernetes keeps the version then), unless the stored
        // form is stale (an older encryption key).
        meta_mut(&mut object).insert(
            "resourceVersion".into(),
            json!(current.revision.to_string()),
        );
        return Ok(object);
    }
    ops.push(Op::Put(key, encode(&object)?));
    // A failed guard means the object changed meanwhile, or a node port it
    // takes was taken concurrently: either way the client retries on the
    // new state.
    commit(api, ctx, &name, guards, ops, object).await
}

/// Runs a guarded write of `object` and stamps its new resourceVersion: a
/// vanished key is 404, any other failed guard 409.
pub async fn commit(
    api: &Api,
    ctx: &Ctx,
    name: &str,
    guards: Vec<Guard>,
    ops: Vec<Op>,
    mut object: Value,
) -> Result<Value> {
    match api.store.txn(&ctx.key(name), guards, ops).await? {
        Written::Ok(revision) => {
            meta_mut(&mut object).insert("resourceVersion".into(), json!(revision.to_string()));
            Ok(object)
        }
        Written::Failed(None) => Err(ApiError::not_found(ctx.resource, name)),
        Written::Failed(Some(_)) => Err(ApiError::conflict(ctx.resource, name)),
    }
}

fn strip_rv(object: &Value) -> Value {
    let mut copy = object.clone();
    meta_mut(&mut copy).remove("resourceVersion");
    copy
}

pub async fn patch(api: &Api, ctx: &mut Ctx, body: bytes::Bytes) -> Result<(StatusCode, Value)> {
    updatable(ctx)?;
    let name = ctx.name.clone().unwrap_or_default();
    let kind = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let patch_type = crate::patch::PatchType::from_content_type(&kind)
        .ok_or_else(|| ApiError::unsupported_media_type(&kind))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the patch body is empty"));
    }
    // A patch carries no resource version of its own, so a concurrent change
    // is retried against the new state rather than reported.
    for attempt in 0.. {
        let current = match load(api, ctx, &name).await {
            Ok(current) => current,
            Err(e) if e.code == 404 && patch_type == crate::patch::PatchType::Apply => {
                let mut applied = crate::patch::apply::decode(&body)?;
                // The object is the one the URL names.
                match meta_str(&applied, "name") {
                    Some(given) if given != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({given}) does not match the name on the URL ({name})"
                        )))
                    }
                    Some(_) => {}
                    None => {
                        meta_mut(&mut applied).insert("name".into(), json!(name));
                    }
                }
                let mut applied = crate::patch::apply::new_object(ctx, applied)?;
                check_type(ctx, &mut applied)?;
                let applied = crate::convert::to_storage(ctx.resource, applied);
                let created = create_object(api, ctx, applied).await?;
                return Ok((StatusCode::CREATED, created));
            }
            Err(e) => return Err(e),
        };
        let served = match ctx.sub {
            Some(Sub::Scale) => scale_of(ctx.storage(), &current.object),
            _ => crate::convert::to_served(ctx.resource, current.object.clone()),
        };
        let patched = crate::patch::apply_patch(ctx, patch_type, &served, &body)?;
        let expected = meta_str(&patched, "resourceVersion")
            .filter(|rv| Some(*rv) != meta_str(&served, "resourceVersion"))
            .map(String::from);
        let result = if ctx.sub == Some(Sub::Scale) {
            let replicas = patched
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(0));
            set_replicas(api, ctx, current, replicas, expected.clone())
                .await
                .map(|o| scale_of(ctx.storage(), &o))
        } else {
            let mut patched = patched;
            check_type(ctx, &mut patched)?;
            let patched = crate::convert::to_storage(ctx.resource, patched);
            update_object(api, ctx, current, patched, expected.clone()).await
        };
        match result {
            Err(e) if e.reason == "Conflict" && expected.is_none() && attempt < 5 => continue,
            other => return other.map(|o| (StatusCode::OK, o)),
        }
    }
    unreachable!("the loop returns")
}

pub async fn post_subresource(
    api: &Api,
    ctx: &mut Ctx,
    body: bytes::Bytes,
) -> Result<(StatusCode, Value)> {
    let name = ctx.name.clone().unwrap_or_default();
    match ctx.sub {
        Some(Sub::Binding) => {
            let binding = decode(ctx, &body)?;
            let node = binding
                .pointer("/target/name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(ctx.resource, &name, vec![Cause::required("target.name")])
                })?
                .to_string();
            bind(api, ctx, &name, &node).await?;
            Ok((StatusCode::CREATED, success_status()))
        }
        Some(Sub::Eviction) => {
            let current = load(api, ctx, &name).await?;
            let options = decode(ctx, &body)
                .ok()
                .and_then(|e| e.get("deleteOptions").cloned());
            let body = options.map(|o| o.to_string()).unwrap_or_default();
            super::delete::delete_loaded(api, ctx, current, body.as_bytes()).await?;
            Ok((StatusCode::CREATED, success_status()))
        }
        Some(Sub::Token) => {
            let answer = crate::serviceaccount::token_request(api, ctx, &body).await?;
            Ok((StatusCode::CREATED, answer))
        }
        None => Err(ApiError::method_not_allowed("POST")),
        Some(_) => Err(ApiError::method_not_allowed("POST")),
    }
}

async fn bind(api: &Api, ctx: &mut Ctx, name: &str, node: &str) -> Result<()> {
    for _ in 0..5 {
        let current = load(api, ctx, name).await?;
        let assigned = current
            .object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !assigned.is_empty() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{assigned}\""),
            ));
        }
        if current
            .object
            .pointer("/metadata/deletionTimestamp")
            .is_some()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut object = current.object.clone();
        object["spec"]["nodeName"] = json!(node);
        crate::hooks::set_condition(&mut object, "PodScheduled", "True", None, None);
        let key = ctx.key(name);
        let ops = vec![Op::Put(key.clone(), encode(&object)?)];
        match api
            .store
            .txn(
                &key,
                vec![Guard::ModRevision(key.clone(), current.revision)],
                ops,
            )
            .await?
        {
            Written::Ok(_) => return Ok(()),
            Written::Failed(None) => return Err(ApiError::not_found(ctx.resource, name)),
            Written::Failed(Some(_)) => continue,
        }
    }
    Err(ApiError::conflict(ctx.resource, name))
}

pub fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// Kubernetes' DefaultIngressClass admission: an Ingress created without a
/// class (neither `spec.ingressClassName` nor the old annotation) gets the
/// IngressClass marked default (the newest, when several are).
async fn default_ingress_class(api: &Api, object: &mut Value) -> Result<()> {
    let named = object
        .pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null())
        || object
            .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
            .is_some();
    if named {
        return Ok(());
    }
    let Some(classes) = crate::resources::find("networking.k8s.io", "v1", "ingressclasses") else {
        return Ok(());
    };
    let listed = api
        .store
        .list(&classes.prefix(None), None, 0, 0)
        .await
        .map_err(ApiError::from)?;
    let default = listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|class| {
            class
                .pointer("/metadata/annotations/ingressclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let created = |c: &Value| {
                c.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            created(a).cmp(&created(b))
        });
    if let Some(name) = default.and_then(|c| c.pointer("/metadata/name").cloned()) {
        set_path(object, &["spec", "ingressClassName"], name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]})
            ),
            "Burstable"
        );
    }

    #[test]
    fn unknown_fields_are_found_with_their_paths() {
        let given = json!({"spec": {"replicas": 1, "replica": 2, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}});
        let known =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        let mut out = Vec::new();
        unknown_fields(&given, &known, "", &mut out);
        assert_eq!(
            out,
            ["spec.replica", "spec.template.spec.containers[0].imagee"]
        );
    }
}
