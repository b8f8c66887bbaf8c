//! The roam policy language: parse, check, evaluate, explain.
//!
//! A policy file (`*.roam`) says, for every app, which links its sessions may use, in what
//! order, and how many at once. This crate is pure: no I/O, no clock, no async. Time (a link's
//! `up_for_ms`, a flow's `age_ms`) is passed in.
#![warn(missing_docs)]

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod model;
pub mod parser;
mod suggest;
pub mod units;

pub use model::{
    Decision, Flow, Interface, LinkKind, LinkState, MultipathMode, Path, Role, State,
};
