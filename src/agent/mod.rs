//! Agents: the HTTP protocol Parley speaks to them, its client, the agent server
//! itself (used by `parley agent`, the embedded demo fleet and the simulator).

pub mod checks;
pub mod client;
pub mod demo;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod names;
pub mod prom;
pub mod protocol;
pub mod real;
pub mod server;
pub mod service;
pub mod simulate;
pub mod standalone;

pub use client::AgentClient;

/// What can go wrong talking to an agent. Every variant names the agent's endpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("{endpoint} did not answer in time")]
    Timeout { endpoint: String },
    /// An install or removal ran past `[fleet] install_timeout_ms`: the agent answers,
    /// but did not finish in time (a real agent still finishes or undoes what it began).
    #[error("{endpoint} did not finish {what} within {} (the install timeout, [fleet] install_timeout_ms)", crate::words::duration(*limit))]
    InstallTimeout { endpoint: String, what: String, limit: std::time::Duration },
    #[error("{endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} refused the request: bad or missing token")]
    Unauthorized { endpoint: String },
    #[error("{endpoint} refused the request ({status}): {message}")]
    Refused { endpoint: String, status: u16, message: String },
    /// Refused before anything was sent: the request would break the agent protocol.
    #[error("not sent to {endpoint}: {reason}")]
    Invalid { endpoint: String, reason: String },
    #[error("{endpoint} sent an answer that is not the agent protocol: {reason}")]
    BadResponse { endpoint: String, reason: String },
}
