//! Request bodies in Kubernetes' protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), which kubectl's typed clients
//! send (`kubectl create namespace`, `run`, `expose`, `create deployment`,
//! ...). A body is decoded into the same JSON the REST API takes, so the
//! rest of the server never sees protobuf; responses are always JSON, which
//! those clients accept.
//!
//! ```text
//!   "k8s\0" + runtime.Unknown{typeMeta{apiVersion, kind}, raw}
//!                                                     └─ the object's message
//! ```
//!
//! The field table (`schema.rs`) is generated; this module walks the wire
//! format with it. Go writes every non-pointer field, so zero values that
//! Go's JSON encoding would have left out (`""`, `0`, `false`, a zero time)
//! are dropped, except for the pointer fields where zero means something
//! (`replicas: 0`, `suspend: false`, ...).

mod schema;

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{json, Map, Value};

pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Type,
    pub repeated: bool,
    /// A Go struct embedded in its parent: its fields are the parent's in
    /// JSON.
    pub inline: bool,
}

pub enum Type {
    Str,
    Bytes,
    Bool,
    Int,
    SInt,
    Double,
    Float,
    Fixed32,
    Fixed64,
    Message(&'static str),
    Map(&'static Type),
}

const MAGIC: &[u8] = b"k8s\0";

/// Pointer fields of the built-in types whose zero value is meaningful.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "activeDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "gracePeriodSeconds",
    "minReplicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "startingDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "partition",
    "priority",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "defaultMode",
    "mode",
    "suspend",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "privileged",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "optional",
    "immutable",
    "allowVolumeExpansion",
    "minAvailable",
    "maxUnavailable",
];

fn table() -> &'static HashMap<&'static str, &'static Message> {
    static TABLE: OnceLock<HashMap<&'static str, &'static Message>> = OnceLock::new();
    TABLE.get_or_init(|| schema::MESSAGES.iter().map(|m| (m.name, m)).collect())
}

/// The message of a kind, from the envelope's apiVersion.
fn message_name(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        None => format!("io.k8s.api.core.{api_version}.{kind}"),
        Some(("meta.k8s.io", version)) => {
            format!("io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}")
        }
        // The package is the group's first label (`rbac` for
        // rbac.authorization.k8s.io, `networking` for networking.k8s.io).
        Some((group, version)) => {
            format!(
                "io.k8s.api.{}.{version}.{kind}",
                group.split('.').next().unwrap_or_default()
            )
        }
    }
}

/// Decodes an enveloped object into its JSON form.
pub fn decode_object(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix")?;
    let envelope = decode_message("io.k8s.apimachinery.pkg.runtime.Unknown", rest, 0)?;
    let api_version = envelope
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = envelope
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let raw = envelope
        .get("raw")
        .and_then(Value::as_str)
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let name = message_name(&api_version, &kind);
    if !table().contains_key(name.as_str()) {
        return Err(format!("no protobuf decoding for {api_version} {kind}"));
    }
    let mut object = decode_message(&name, &raw, 0)?;
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("truncated field")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// Nesting deeper than this is refused (no built-in type comes close).
const MAX_DEPTH: usize = 64;

fn decode_message(name: &str, bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("message nested too deeply".into());
    }
    match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return time(name, bytes),
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            let fields = raw_fields(bytes)?;
            let text = fields
                .iter()
                .find(|(tag, _)| *tag == 1)
                .map(|(_, v)| v.clone());
            return Ok(match text {
                Some(Raw::Bytes(b)) => json!(String::from_utf8_lossy(&b)),
                _ => json!("0"),
            });
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let fields = raw_fields(bytes)?;
            let get = |t: u32| {
                fields
                    .iter()
                    .find(|(tag, _)| *tag == t)
                    .map(|(_, v)| v.clone())
            };
            let is_string = matches!(get(1), Some(Raw::Varint(1)));
            return Ok(if is_string {
                match get(3) {
                    Some(Raw::Bytes(b)) => json!(String::from_utf8_lossy(&b)),
                    _ => json!(""),
                }
            } else {
                match get(2) {
                    Some(Raw::Varint(v)) => json!(v as i64 as i32),
                    _ => json!(0),
                }
            });
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let fields = raw_fields(bytes)?;
            return Ok(match fields.iter().find(|(tag, _)| *tag == 1) {
                Some((_, Raw::Bytes(b))) => serde_json::from_slice(b).unwrap_or(Value::Null),
                _ => Value::Null,
            });
        }
        _ => {}
    }
    let message = table()
        .get(name)
        .ok_or_else(|| format!("unknown protobuf message {name}"))?;
    let mut object = Map::new();
    for (tag, raw) in raw_fields(bytes).map_err(|e| format!("{e} in {name}"))? {
        let Some(field) = message.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        match &field.ty {
            Type::Map(inner) => {
                let Raw::Bytes(entry) = raw else {
                    return Err(format!(
                        "{name}.{}: a map entry must be length-delimited",
                        field.json
                    ));
                };
                let entry = raw_fields(&entry)?;
                let key = match entry.iter().find(|(t, _)| *t == 1) {
                    Some((_, Raw::Bytes(k))) => String::from_utf8_lossy(k).into_owned(),
                    _ => String::new(),
                };
                let value = match entry.iter().find(|(t, _)| *t == 2) {
                    Some((_, v)) => scalar_or_message(inner, v.clone(), depth)?,
                    None => default_of(inner),
                };
                let map = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(map) = map.as_object_mut() {
                    map.insert(key, value);
                }
            }
            ty => {
                let packed = matches!(raw, Raw::Bytes(_));
                let values = if field.repeated && packed && is_packable(ty) {
                    let Raw::Bytes(packed) = raw else {
                        unreachable!("wire type 2 is bytes")
                    };
                    unpack(ty, &packed)?
                } else {
                    vec![scalar_or_message(ty, raw, depth)?]
                };
                if field.inline {
                    if let Some(Value::Object(inner)) = values.into_iter().last() {
                        object.extend(inner);
                    }
                } else if field.repeated {
                    let list = object
                        .entry(field.json)
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(list) = list.as_array_mut() {
                        list.extend(values);
                    }
                } else if let Some(value) = values.into_iter().last() {
                    object.insert(field.json.to_string(), value);
                }
            }
        }
    }
    object.retain(|field, value| !is_go_zero(field, value));
    Ok(Value::Object(object))
}

fn is_go_zero(field: &str, value: &Value) -> bool {
    let zero = match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    zero && !(KEEP_ZERO.contains(&field) && !value.is_null() && !matches!(value, Value::String(_)))
}

#[derive(Clone)]
enum Raw {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(Vec<u8>),
}

fn raw_fields(bytes: &[u8]) -> Result<Vec<(u32, Raw)>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut fields = Vec::new();
    while !reader.done() {
        let key = reader.varint()?;
        let raw = match key & 7 {
            0 => Raw::Varint(reader.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(
                reader.take(8)?.try_into().map_err(|_| "bad fixed64")?,
            )),
            2 => {
                let len = usize::try_from(reader.varint()?).map_err(|_| "length overflows")?;
                Raw::Bytes(reader.take(len)?.to_vec())
            }
            5 => Raw::Fixed32(u32::from_le_bytes(
                reader.take(4)?.try_into().map_err(|_| "bad fixed32")?,
            )),
            other => return Err(format!("unsupported wire type {other}")),
        };
        fields.push(((key >> 3) as u32, raw));
    }
    Ok(fields)
}

fn is_packable(ty: &Type) -> bool {
    !matches!(
        ty,
        Type::Str | Type::Bytes | Type::Message(_) | Type::Map(_)
    )
}

fn unpack(ty: &Type, bytes: &[u8]) -> Result<Vec<Value>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut values = Vec::new();
    while !reader.done() {
        let raw = match ty {
            Type::Double | Type::Fixed64 => Raw::Fixed64(u64::from_le_bytes(
                reader.take(8)?.try_into().map_err(|_| "bad fixed64")?,
            )),
            Type::Float | Type::Fixed32 => Raw::Fixed32(u32::from_le_bytes(
                reader.take(4)?.try_into().map_err(|_| "bad fixed32")?,
            )),
            _ => Raw::Varint(reader.varint()?),
        };
        values.push(scalar_or_message(ty, raw, 0)?);
    }
    Ok(values)
}

fn default_of(ty: &Type) -> Value {
    match ty {
        Type::Str | Type::Bytes => json!(""),
        Type::Bool => json!(false),
        Type::Message(_) | Type::Map(_) => json!({}),
        _ => json!(0),
    }
}

fn scalar_or_message(ty: &Type, raw: Raw, depth: usize) -> Result<Value, String> {
    Ok(match (ty, raw) {
        (Type::Str, Raw::Bytes(b)) => {
            json!(String::from_utf8(b).map_err(|_| "a string field is not UTF-8")?)
        }
        (Type::Bytes, Raw::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Type::Bool, Raw::Varint(v)) => json!(v != 0),
        (Type::Int, Raw::Varint(v)) => json!(v as i64),
        (Type::SInt, Raw::Varint(v)) => json!(((v >> 1) as i64) ^ -((v & 1) as i64)),
        (Type::Double, Raw::Fixed64(v)) => json!(f64::from_bits(v)),
        (Type::Fixed64, Raw::Fixed64(v)) => json!(v),
        (Type::Float, Raw::Fixed32(v)) => json!(f32::from_bits(v)),
        (Type::Fixed32, Raw::Fixed32(v)) => json!(v),
        (Type::Message(name), Raw::Bytes(b)) => decode_message(name, &b, depth + 1)?,
        _ => return Err("a field has the wrong wire type".into()),
    })
}

fn time(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let fields = raw_fields(bytes)?;
    let seconds = match fields.iter().find(|(t, _)| *t == 1) {
        Some((_, Raw::Varint(v))) => *v as i64,
        _ => 0,
    };
    let nanos = match fields.iter().find(|(t, _)| *t == 2) {
        Some((_, Raw::Varint(v))) => *v as i64 as i32,
        _ => 0,
    };
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = jiff::Timestamp::new(seconds, nanos).map_err(|e| e.to_string())?;
    Ok(if name.ends_with("MicroTime") {
        json!(t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    } else {
        json!(crate::object::format_time(t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut unknown = Vec::new();
        bytes_field(1, &type_meta, &mut unknown);
        bytes_field(2, raw, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        body
    }

    #[test]
    fn a_config_map_decodes_to_its_json() {
        // ConfigMap{metadata{name: "cm", namespace: ""}, data{"a": "1"}}
        let mut meta = Vec::new();
        bytes_field(1, b"cm", &mut meta);
        bytes_field(3, b"", &mut meta);
        let mut entry = Vec::new();
        bytes_field(1, b"a", &mut entry);
        bytes_field(2, b"1", &mut entry);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry, &mut cm);
        let object = decode_object(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})
        );
    }

    #[test]
    fn replicas_zero_is_kept_and_int_or_string_decodes() {
        // Deployment{spec{replicas: 0, strategy{rollingUpdate{maxSurge: "25%"}}}}
        let mut surge = Vec::new();
        varint(1 << 3, &mut surge);
        varint(1, &mut surge);
        bytes_field(3, b"25%", &mut surge);
        let mut rolling = Vec::new();
        bytes_field(2, &surge, &mut rolling);
        let mut strategy = Vec::new();
        bytes_field(2, &rolling, &mut strategy);
        let mut spec = Vec::new();
        varint(1 << 3, &mut spec);
        varint(0, &mut spec);
        bytes_field(4, &strategy, &mut spec);
        let mut deployment = Vec::new();
        bytes_field(2, &spec, &mut deployment);
        let object = decode_object(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
        assert_eq!(object["spec"]["replicas"], 0);
        assert_eq!(
            object["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_object(b"not protobuf").is_err());
        assert!(decode_object(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        let mut body = MAGIC.to_vec();
        body.extend([0x12, 0x05, 0x0a]);
        assert!(decode_object(&body).is_err());
        assert!(decode_object(&envelope("v1", "NoSuchKind", b"")).is_err());
    }

    #[test]
    fn the_table_knows_the_served_kinds() {
        for r in crate::resources::all() {
            let name = message_name(&r.api_version(), r.kind);
            assert!(table().contains_key(name.as_str()), "{name}");
        }
    }
}
