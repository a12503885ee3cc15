//! shoal's node agent. Today it has one mode: simulated nodes (as kwok
//! has), which register, heartbeat and report their pods Running without
//! running them, so that the control loops can be tested and measured with
//! many nodes on one machine. The agent that runs pods in real sandboxes
//! comes with its own issue.

pub mod image;
pub mod runtime;
pub mod simulate;
