//! shoal's API server: the Kubernetes REST API over the store, and nothing
//! else (the controllers and the scheduler are API clients in
//! `shoal-controllers`; helpers shared with them are in `shoal-core`).
//!
//! ```text
//!   server      HTTPS, routes, authentication, accept loop
//!   serviceaccount   ServiceAccount tokens: signing, checking, TokenRequest, pod admission
//!   rbac/       authorization: RBAC index, access reviews, default roles, escalation checks
//!   metrics     /metrics: requests by verb, resource and code; latency; watches
//!   discovery   /version, /api, /apis, aggregated discovery
//!   rest/       generic handlers: get, list, watch, create, update, patch, delete
//!   query       query parameters, read as kube-apiserver reads them
//!   resources   the one table of served resources
//!   patch/      JSON, merge, strategic merge and server-side apply patches
//!   defaults, validation, hooks, allocate, convert   what happens to an object on the way in
//!   table       server-side printing for kubectl
//!   storage     the etcd v3 client the rest is built on
//!   namespaces  system namespaces and namespace deletion
//!   endpoint_reconciler   this replica's address in Endpoints default/kubernetes
//!   watch_cache one store watch per kind shared by the API's watches
//!   protobuf    Kubernetes' protobuf request bodies (schema.rs is generated)
//!   openapi, schema   OpenAPI v3 documents from k8s-openapi's schemas
//! ```
//!
//! Public are the server's entry points and, for the property tests in
//! `tests/fuzz.rs`, the pure parts they drive.

mod allocate;
pub mod audit;
pub mod audit_policy;
pub mod bootstrap;
mod compaction;
mod convert;
pub mod defaults;
mod discovery;
pub mod encryption;
mod endpoint_reconciler;
mod error;
mod hooks;
mod metrics;
mod namespaces;
mod object;
mod openapi;
pub mod patch;
pub mod protobuf;
mod query;
pub mod rbac;
pub mod resources;
mod rest;
mod schema;
pub mod selectors;
pub mod server;
pub mod serviceaccount;
mod storage;
pub mod table;
pub mod validation;
mod watch_cache;

pub use server::{start, Config, Running, StartError};
