//! Front-ends. Each only renders replies and reads input; all logic is in
//! `dialog::Session`.

pub mod ask;
pub mod audit;
pub mod json;
pub mod out;
pub mod remote;
pub mod repl;
pub mod text;
pub mod tui;
