//! roamd, the roam agent, and roamctl, its command line.
#![warn(missing_docs)]

pub mod policy_cmd;
