//! # errmap-server
//!
//! The server side of errmap: every error that leaves a tonic server carries
//! exactly one catalog `ErrorInfo` (the response layer), and the server
//! around it: admission (routes, drain, request intake, places), auth (JWT),
//! the listener and its connections (limits, TLS), gRPC-Web and the HTTP/JSON
//! API with the catalog pages, metrics and the admin listener, and the lookup
//! service. [`server::ErrmapServer`] assembles them; each layer also works on
//! its own in any tonic server.
//!
//! The catalog itself, building and reading statuses, is the light `errmap`
//! crate, which this one builds on.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod connect;
pub mod connections;
mod descriptors;
pub mod health_port;
pub mod http_api;
pub mod http_error;
pub mod layer;
pub mod listener;
pub mod measure;
pub mod memory;
pub mod metrics;
pub mod otlp;
pub mod panic;
mod reflection;
pub mod reload;
pub mod sanitize;
pub mod server;
pub mod service;
pub mod tls;
mod trace_context;
mod unary;
pub mod web;

pub use server::{ErrmapServer, ServerConfig};

/// The README's Rust snippets, compiled and run as doc tests (the README
/// is the repository's; it is not part of this crate's package).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
