//! Parley: a conversational operations assistant for a fleet of software agents.
//!
//! The library holds the whole pipeline; `main.rs` only turns arguments into a
//! configuration and picks a front-end. One turn flows
//! `ui` -> `dialog::Session` -> `intent` -> `feasibility` -> `orchestrate` -> `Reply`.

pub mod agent;
pub mod analysis;
pub mod app;
pub mod artifact;
pub mod client;
pub mod config;
pub mod diagnose;
pub mod dialog;
pub mod digest;
pub mod feasibility;
pub mod freeze;
pub mod help;
pub mod intent;
pub mod llm;
pub mod notify;
pub mod ops;
pub mod orchestrate;
pub mod registry;
pub mod reply;
pub mod routing;
pub mod server;
pub mod services;
pub mod slack;
pub mod topology;
pub mod ui;
pub mod voice;
pub mod words;
