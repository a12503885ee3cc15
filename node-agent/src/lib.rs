//! shoal's node agent. Today it has simulated nodes (as kwok has), which
//! register, heartbeat and report their pods Running without running them,
//! so that the control loops can be tested and measured with many nodes on
//! one machine; and the building blocks of the agent that runs pods for
//! real: the local image store (`image`) and the runc container runtime
//! with its per-container shim (`runtime`). The pod worker that joins them
//! to the API (and the sandbox network of the `overlay` crate) comes next.

pub mod agent;
pub mod image;
pub mod quantity;
pub mod runtime;
pub mod simulate;
