//! PATCH in the four content types Kubernetes accepts:
//!
//! ```text
//!   application/json-patch+json            RFC 6902 operations (json-patch crate)
//!   application/merge-patch+json           RFC 7386 merge (json-patch crate)
//!   application/strategic-merge-patch+json lists merged by key (strategic.rs)
//!   application/apply-patch+yaml           server-side apply (apply.rs)
//! ```
//!
//! Each produces the whole new object, which then goes through the same
//! update path as a PUT.

pub mod apply;
pub mod strategic;

use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::rest::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(kind: &str) -> Option<PatchType> {
        Some(match kind {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// `current` with the patch in `body` applied.
pub fn apply_patch(ctx: &Ctx, kind: PatchType, current: &Value, body: &[u8]) -> Result<Value> {
    let patched = patched(ctx, kind, current, body)?;
    if !patched.is_object() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "the patch turns the object into something that is not an object",
        ));
    }
    Ok(patched)
}

fn patched(ctx: &Ctx, kind: PatchType, current: &Value, body: &[u8]) -> Result<Value> {
    match kind {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut object = current.clone();
            json_patch::patch(&mut object, &operations).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(object)
        }
        PatchType::Merge => {
            let patch = patch_object(body)?;
            let mut object = current.clone();
            json_patch::merge(&mut object, &patch);
            Ok(object)
        }
        PatchType::Strategic => {
            let patch = patch_object(body)?;
            strategic::merge(ctx.resource.kind, current, &patch).map_err(ApiError::bad_request)
        }
        PatchType::Apply => {
            let applied = apply::decode(body)?;
            apply::apply(ctx, current, applied)
        }
    }
}

fn patch_object(body: &[u8]) -> Result<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "invalid patch: the patch must be a JSON object",
        ));
    }
    Ok(patch)
}
