//! `shoal-container-shim <container-dir>`: the per-container
//! shim (`shoal_agent::runtime::shim`) as a small program of its own. The
//! runtime runs it when it sits next to the `shoal` binary, so that each
//! container start execs a few megabytes rather than all of `shoal`
//! (`shoal container-shim` does the same and is the fallback).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: shoal-container-shim <container-dir>";

fn main() -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    for arg in std::env::args_os().skip(1) {
        if dir.is_none() {
            dir = Some(PathBuf::from(arg));
        } else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match shoal_agent::runtime::shim::main(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("container-shim: {e}");
            ExitCode::FAILURE
        }
    }
}
