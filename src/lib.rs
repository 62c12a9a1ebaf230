//! Parley: a conversational operations assistant for a fleet of software agents.
//!
//! The library holds the whole pipeline; `main.rs` only turns arguments into a
//! configuration and picks a front-end. See ARCHITECTURE in the README for the flow
//! of one turn.

pub mod agent;
pub mod ops;
pub mod orchestrate;
pub mod registry;
pub mod reply;
pub mod topology;
