//! shoal's node agent, the kubelet.
//!
//! ```text
//!   agent/     the agent that runs pods: Node and Lease, one worker per pod
//!              (sandbox from `shoal-overlay`, volumes, containers, probes),
//!              status, events, the HTTPS server for logs/exec/attach
//!   image/     the local image store (`shoal image load`; no registry)
//!   metrics    the agent's own /metrics (kubelet names)
//!   runtime/   runc containers, each under a small shim; CRI log files
//!   simulate   simulated nodes (as kwok's): register, heartbeat and report
//!              pods Running without running them, to test the control
//!              loops with many nodes on one machine
//! ```

pub mod agent;
pub mod image;
pub mod metrics;
pub mod runtime;
pub mod simulate;
