//! shoal's API server: the Kubernetes REST API over the store.
//!
//! ```text
//!   server      HTTPS, routes, authentication, accept loop
//!   discovery   /version, /api, /apis, aggregated discovery
//!   rest/       generic handlers: get, list, watch, create, update, patch, delete
//!   resources   the one table of served resources
//!   patch/      JSON, merge, strategic merge and server-side apply patches
//!   defaults, validation, hooks, allocate, convert   what happens to an object on the way in
//!   table       server-side printing for kubectl
//!   storage     the etcd v3 client the rest is built on
//!   namespaces  system namespaces and namespace deletion
//!   endpoint_reconciler   this replica's address in Endpoints default/kubernetes
//! ```

pub mod allocate;
pub mod compaction;
pub mod controllers;
pub mod convert;
pub mod defaults;
pub mod discovery;
pub mod endpoint_reconciler;
pub mod error;
pub mod events;
pub mod hooks;
pub mod leader;
pub mod namespaces;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod rest;
pub mod scheduler;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod storage;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch_cache;

pub use server::{start, Config, Running, StartError};
