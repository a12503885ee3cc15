//! shoal's cluster DNS: the names of the Kubernetes DNS specification for
//! Services, their endpoints and pods, answered from memory, and every
//! other name forwarded to the node's resolvers.
//!
//! ```text
//!   index     the cluster's names, built from Services, EndpointSlices, Pods
//!   handler   hickory-server zone handlers: the cluster zone, its reverse
//!             names, the upstream forwarder with its cache
//!   server    sockets, the catalog, the rebuild loop; `watch` for a server
//!             of its own
//!   metrics   queries, rcodes, latency, cache hits in Prometheus' format
//! ```
//!
//! It runs in every agent (pods ask their own node, as with NodeLocal
//! DNSCache) and standalone as `shoal dns`.

pub mod handler;
pub mod index;
pub mod metrics;
pub mod server;

pub use metrics::Metrics;
pub use server::{serve, watch, Config, Error, Sources};
