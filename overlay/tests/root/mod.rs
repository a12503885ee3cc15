//! What the overlay's root-only suites share: whether they may run here,
//! a private node namespace to run in, and TCP probes from pod namespaces.

// Each suite uses some of these.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_overlay::netns;

/// True as root. Otherwise says why the test does not run and returns
/// false, or under `CI=true` (where a test that cannot run must fail)
/// panics.
pub fn may_run(needs: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "cannot run without root under CI=true: {needs}"
    );
    eprintln!("skipped: {needs}");
    false
}

/// Runs `body` on a thread in fresh network and mount namespaces, with a
/// single-threaded tokio runtime living on that thread (so every netlink
/// socket, and every thread the overlay starts, is in the test's node
/// namespace).
pub fn on_private_node<F, Fut>(body: F)
where
    F: FnOnce(tempfile::TempDir) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !may_run("the pod network needs root (network namespaces, bridges, mounts)") {
        return;
    }
    let thread = std::thread::spawn(move || {
        netns::isolate_thread().expect("a network namespace of the test's own");
        let state = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body(state));
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

pub fn listen(path: Option<&Path>, ip: Ipv4Addr) -> SocketAddr {
    let bind = move || TcpListener::bind((ip, 0)).expect("bind");
    let listener = match path {
        Some(path) => netns::run_in_blocking(path, bind).expect("entering the namespace"),
        None => bind(),
    };
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            if let Ok(mut conn) = conn {
                let _ = conn.write_all(format!("pong {n} from {ip}").as_bytes());
            }
        }
    });
    addr
}

/// Connects from inside the namespace at `path` to `to`; the greeting, or
/// the error. Retries until a deadline: a fresh bridge port may still be
/// settling on a loaded machine.
pub fn talk_from(path: &Path, to: SocketAddr) -> Result<String, String> {
    netns::run_in_blocking(path, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt =
                TcpStream::connect_timeout(&to, Duration::from_secs(2)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut got = String::new();
                    s.read_to_string(&mut got)?;
                    Ok(got)
                });
            match attempt {
                Ok(got) => return Ok(got),
                Err(e) if Instant::now() > deadline => return Err(format!("{to}: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .expect("entering the namespace")
}
