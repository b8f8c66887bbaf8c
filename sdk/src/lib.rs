//! roam SDK: sessions that survive losing the interface they started on.
#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod path;

pub use error::{Error, Result};
pub use events::{Events, SessionEvent};
pub use roam_policy::model;
