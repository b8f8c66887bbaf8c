//! What kind of link an interface is: roam-link's one classifier (config overrides, sysfs,
//! Linux and Android names, the rtnetlink kind), re-exported under roamd's historic path.
//! `SysfsFacts::read` reads the facts from `/sys/class/net`.
pub use roam_link::{KindOverride, SysfsFacts, classify, glob_match};
