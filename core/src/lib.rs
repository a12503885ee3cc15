//! What several of shoal's crates need, written once: the apiserver, the
//! controllers, the node agent, the overlay and DNS all build on it.
//!
//! ```text
//!   cidr       IPv4 ranges: pod network, node ranges, Service range, pools
//!   quantity   resource quantities, exactly (`250m`, `64Mi`, `1e9`)
//!   pod        ready, active, QoS class, container lookup (pkg/api/v1/pod)
//!   selector   client-side label selector matching and query strings
//!   names      DNS-1123/1035 name rules
//!   time       metav1.Time / MicroTime formatting
//!   duration   Go's duration grammar, flag durations
//!   cron       CronJob schedules (robfig/cron's standard parser)
//!   json       untyped object edits (set a path, drop nulls)
//!   tls        the cluster CA, serving certificates, rustls configurations
//!   client     kube clients from kubeconfigs
//!   cache      caches of a kind kept by a watch, with a change signal
//!   metrics    Prometheus expositions and a plain-HTTP /metrics server
//! ```

pub mod cache;
pub mod cidr;
pub mod client;
pub mod cron;
pub mod duration;
pub mod json;
pub mod metrics;
pub mod names;
pub mod pod;
pub mod quantity;
pub mod selector;
pub mod time;
pub mod tls;
