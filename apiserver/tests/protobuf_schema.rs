//! The protobuf field table (`src/protobuf/schema.rs`) is exactly what
//! `scripts/gen-protobuf-schema.py` makes from the k8s-pb and k8s-openapi
//! versions `Cargo.lock` pins, so that it can be regenerated on any machine
//! and never drifts from its sources.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_protobuf_table_is_what_the_generator_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("scripts/gen-protobuf-schema.py"))
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("python3 runs the generator");
    assert!(
        out.status.success(),
        "the generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let committed =
        std::fs::read_to_string(root.join("apiserver/src/protobuf/schema.rs")).expect("schema.rs");
    assert!(
        generated == committed,
        "apiserver/src/protobuf/schema.rs is not what the generator makes; run\n  \
         python3 scripts/gen-protobuf-schema.py > apiserver/src/protobuf/schema.rs"
    );
}
