#!/usr/bin/env python3
"""Generates apiserver/src/protobuf/schema.rs: the field table the
apiserver decodes Kubernetes protobuf request bodies with.

Field numbers and wire types come from the prost attributes of the k8s-pb
crate (Kubernetes' protobuf schema as Rust), JSON field names from
k8s-openapi's `v1_32` module (the API version the workspace builds, the
same names the REST API uses). Both are the versions `Cargo.lock` pins
(k8s-pb is an optional dependency of the apiserver that is never built),
found with `cargo metadata`, so every machine generates the same file;
`apiserver/tests/protobuf_schema.rs` fails when the committed file is not
what this makes. The output is already formatted as rustfmt would.

    python3 scripts/gen-protobuf-schema.py > apiserver/src/protobuf/schema.rs
"""
import glob
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_VERSION = "v1_32"


def locked_sources():
    """The source folders of the locked k8s-pb and k8s-openapi."""
    cargo = os.environ.get("CARGO", "cargo")
    metadata = json.loads(subprocess.check_output(
        [cargo, "metadata", "--format-version", "1", "--locked", "--all-features",
         "--manifest-path", os.path.join(REPO, "Cargo.toml")]))
    roots = {}
    for package in metadata["packages"]:
        if package["name"] in ("k8s-pb", "k8s-openapi"):
            roots[package["name"]] = os.path.join(os.path.dirname(package["manifest_path"]), "src")
    return roots["k8s-pb"], os.path.join(roots["k8s-openapi"], API_VERSION)


pb_root, openapi_root = locked_sources()

STRUCT = re.compile(r"pub struct (\w+) \{")
ATTR = re.compile(r'#\[prost\((\w+)(?: = "([^"]+)")?, (?:(optional|repeated|required), )?tag = "(\d+)"\)\]')
FIELD = re.compile(r"pub (r#)?(\w+): (.+),$")


def package_of(path):
    rel = os.path.relpath(os.path.dirname(path), pb_root)
    parts = rel.split(os.sep)
    if parts[0] == "api":
        return "io.k8s.api." + ".".join(parts[1:])
    if parts[0] == "apimachinery":
        return "io.k8s.apimachinery." + ".".join(parts[1:])
    return None


def resolve(package, rust_type):
    """`super::super::X::Y` relative to the package's module path."""
    rust_type = rust_type.strip().rstrip(",").strip()
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while rust_type.startswith(wrapper):
            rust_type = rust_type[len(wrapper):-1].strip()
    segments = rust_type.split("::")
    module = package.split(".")[2:]  # drop io.k8s
    root = package.split(".")[:2]
    while segments and segments[0] == "super":
        module = module[:-1]
        segments = segments[1:]
    return ".".join(root + module + segments)


def json_names(package, struct):
    """snake field name -> JSON name, from k8s-openapi."""
    rel = package.replace("io.k8s.", "").replace(".", "/")
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", struct).lower()
    # k8s-openapi file names keep acronyms together (pod_ip, cidr, ...).
    candidates = glob.glob(os.path.join(openapi_root, rel, "*.rs"))
    for path in candidates:
        text = open(path).read()
        if re.search(r"pub struct %s \{" % struct, text):
            return dict((b, a) for a, b in re.findall(r'"([A-Za-z0-9$_.-]+)" => Field::Key_(\w+),', text))
    return None


messages = {}
for path in glob.glob(pb_root + "/**/mod.rs", recursive=True):
    package = package_of(path)
    if package is None:
        continue
    raw_lines = open(path).read().splitlines()
    # Join field declarations that rustfmt split over several lines.
    lines = []
    pending = None
    for line in raw_lines:
        stripped = line.strip()
        if pending is not None:
            pending += " " + stripped
            if stripped.endswith(",") and pending.count("<") == pending.count(">"):
                lines.append(pending)
                pending = None
            continue
        if stripped.startswith("pub ") and ":" in stripped and not stripped.endswith(",") and not stripped.endswith("{"):
            pending = stripped
            continue
        lines.append(line)
    current = None
    attr = None
    for line in lines:
        line = line.strip()
        m = STRUCT.match(line)
        if m:
            current = package + "." + m.group(1)
            messages[current] = []
            attr = None
            continue
        if current is None:
            continue
        if line == "}":
            current = None
            continue
        a = ATTR.match(line)
        if a:
            attr = a
            continue
        f = FIELD.match(line)
        if f and attr:
            kind, detail, label, tag = attr.groups()
            name = f.group(2)
            rust_type = f.group(3)
            target = None
            if kind == "message":
                target = resolve(package, rust_type)
            elif kind == "btree_map":
                key, value = [p.strip() for p in detail.split(",")]
                if value.startswith("message"):
                    inner = rust_type.split(",", 1)[1].rsplit(">", 1)[0]
                    target = resolve(package, inner)
                detail = value
            messages[current].append((int(tag), name, kind, detail, label, target))
            attr = None

# Keep what the served kinds (and the request bodies kubectl sends) reach.
roots = [
    "io.k8s.apimachinery.pkg.runtime.Unknown",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.api.policy.v1.Eviction",
    "io.k8s.api.core.v1.Binding",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.api.authentication.v1.TokenRequest",
]
for package, kinds in {
    "io.k8s.api.core.v1": ["Namespace", "Pod", "Service", "Endpoints", "Node", "Event", "ConfigMap", "Secret",
                           "ServiceAccount", "PersistentVolume", "PersistentVolumeClaim", "ResourceQuota",
                           "LimitRange", "ReplicationController", "PodTemplate"],
    "io.k8s.api.apps.v1": ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ControllerRevision"],
    "io.k8s.api.batch.v1": ["Job", "CronJob"],
    "io.k8s.api.discovery.v1": ["EndpointSlice"],
    "io.k8s.api.networking.v1": ["NetworkPolicy", "Ingress", "IngressClass"],
    "io.k8s.api.autoscaling.v1": ["HorizontalPodAutoscaler"],
    "io.k8s.api.autoscaling.v2": ["HorizontalPodAutoscaler"],
    "io.k8s.api.certificates.v1": ["CertificateSigningRequest"],
    "io.k8s.api.coordination.v1": ["Lease"],
    "io.k8s.api.events.v1": ["Event"],
    "io.k8s.api.policy.v1": ["PodDisruptionBudget"],
    "io.k8s.api.storage.v1": ["StorageClass"],
    "io.k8s.api.scheduling.v1": ["PriorityClass"],
    "io.k8s.api.rbac.v1": ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"],
    "io.k8s.api.authorization.v1": ["SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview",
                                    "LocalSubjectAccessReview"],
    "io.k8s.api.authentication.v1": ["SelfSubjectReview", "TokenReview"],
}.items():
    roots += [package + "." + k for k in kinds]

reachable = set()
stack = list(roots)
while stack:
    name = stack.pop()
    if name in reachable or name not in messages:
        if name not in messages:
            print("warning: no message %s" % name, file=sys.stderr)
        continue
    reachable.add(name)
    for (_, _, _, _, _, target) in messages[name]:
        if target:
            stack.append(target)

KIND = {
    "string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "Int", "int64": "Int",
    "uint32": "Int", "uint64": "Int", "sint32": "SInt", "sint64": "SInt", "double": "Double",
    "float": "Float", "fixed32": "Fixed32", "fixed64": "Fixed64",
}

out = []
out.append("//! Generated by scripts/gen-protobuf-schema.py from the k8s-pb and")
out.append("//! k8s-openapi crates: field numbers and types of Kubernetes' protobuf")
out.append("//! messages, with the JSON name of each field. Do not edit.")
out.append("")
out.append("use super::{Field, Message, Type};")
out.append("")
out.append("pub static MESSAGES: &[Message] = &[")
for name in sorted(reachable):
    package, struct = name.rsplit(".", 1)
    names = json_names(package, struct) or {}
    out.append("    Message {")
    out.append('        name: "%s",' % name)
    fields = sorted(messages[name])
    if not fields:
        out.append("        fields: &[],")
        out.append("    },")
        continue
    # rustfmt writes a one-field array as `&[Field {` on one line.
    single = len(fields) == 1
    pad = " " * (12 if single else 16)
    out.append("        fields: &[Field {" if single else "        fields: &[")
    for (tag, snake, kind, detail, label, target) in fields:
        json_name = names.get(snake)
        # A Go struct embedded in its parent is a message field in protobuf
        # but has its fields inlined in JSON (LocalObjectReference,
        # VolumeSource, ProbeHandler, ...).
        # Go names an embedded field after its type (Probe's ProbeHandler
        # is the one called otherwise); a field k8s-openapi's v1_32 lacks
        # for another reason is newer than 1.32 and not inlined.
        embedded = kind == "message" and (
            snake == re.sub(r"(?<!^)(?=[A-Z])", "_", target.rsplit(".", 1)[1]).lower()
            or (snake, target.rsplit(".", 1)[1]) == ("handler", "ProbeHandler"))
        inline = json_name is None and bool(names) and embedded
        if json_name is None:
            # Fields k8s-openapi lacks (or wrapper messages): lowerCamel.
            parts = snake.split("_")
            json_name = parts[0] + "".join(p.title() for p in parts[1:])
        if kind == "message":
            ty = 'Type::Message("%s")' % target
        elif kind == "btree_map":
            if detail.startswith("message"):
                ty = 'Type::Map(&Type::Message("%s"))' % target
            else:
                ty = "Type::Map(&Type::%s)" % KIND[detail]
        else:
            ty = "Type::" + KIND[kind]
        if not single:
            out.append("            Field {")
        out.append(pad + "tag: %d," % tag)
        out.append(pad + 'json: "%s",' % json_name)
        line = pad + "ty: %s," % ty
        # rustfmt breaks a line wider than 100 columns, and a call whose
        # argument is a call wider than 60 columns.
        wide = target is not None and (len(line) > 100 or (
            ty.startswith("Type::Map(") and len('&Type::Message("%s")' % target) > 60))
        if wide and ty.startswith("Type::Map("):
            # rustfmt's break of a call too long for one line.
            out.append(pad + "ty: Type::Map(&Type::Message(")
            out.append(pad + '    "%s",' % target)
            out.append(pad + ")),")
        elif wide:
            out.append(pad + "ty: Type::Message(")
            out.append(pad + '    "%s",' % target)
            out.append(pad + "),")
        else:
            out.append(line)
        out.append(pad + "repeated: %s," % ("true" if label == "repeated" else "false"))
        out.append(pad + "inline: %s," % ("true" if inline else "false"))
        if not single:
            out.append("            },")
    if single:
        out.append("        }],")
        out.append("    },")
        continue
    out.append("        ],")
    out.append("    },")
out.append("];")
print("\n".join(out))
