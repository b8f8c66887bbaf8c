//! Which descriptors are roam's: the process-wide table from a descriptor to what stands
//! behind it (a session's pump, a listener), keyed by the descriptor's number and checked by
//! its identity (device and inode of the socket), so a number the app closed and the kernel
//! gave to another file is never taken for the old one.
//!
//! In a forked child the table is the parent's and its pumps do not run there: on the first
//! lookup in another process the table is emptied (its entries are forgotten, not dropped: they
//! point into the parent's runtime). Descriptors inherited from the parent are then "not a roam
//! descriptor" to `roam_paths`, `roam_events_fd` and `roam_accept` in the child, while reading
//! and writing them still reaches the parent's pump: the same socket, shared as any socket is
//! across fork. Closing them in the child does not end the session while the parent holds them.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::guard::FfiError;
use crate::pump::Request;

/// The identity of an open file: `st_dev` and `st_ino`.
pub type Identity = (u64, u64);

/// What stands behind a roam descriptor.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A session; requests go to its pump.
    Session(tokio::sync::mpsc::UnboundedSender<Request>),
    /// A listener: accepted sessions wait in `queue`, one byte each on the descriptor.
    Listener(Arc<ListenerShared>),
    /// A session whose both directions ended: its pump is gone, its last paths (JSON) stay
    /// for `roam_paths` until the app closes the descriptor.
    Finished(Arc<str>),
}

/// What a listener's task and `roam_accept` share.
#[derive(Debug)]
pub struct ListenerShared {
    /// Sessions accepted and not yet taken, oldest first.
    pub queue: Mutex<VecDeque<roam_sdk::Session>>,
    /// The library's end of the listener's socketpair (a duplicate): `roam_accept` writes a
    /// byte back on it when it puts a session back.
    pub wake: OwnedFd,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    identity: Identity,
    kind: Kind,
}

struct Table {
    pid: u32,
    entries: HashMap<RawFd, Entry>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn with_table<R>(f: impl FnOnce(&mut HashMap<RawFd, Entry>) -> R) -> R {
    let pid = std::process::id();
    let mut slot = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    match slot.as_mut() {
        Some(t) if t.pid == pid => f(&mut t.entries),
        _ => {
            if let Some(old) = slot.take() {
                std::mem::forget(old);
            }
            let t = slot.insert(Table {
                pid,
                entries: HashMap::new(),
            });
            f(&mut t.entries)
        }
    }
}

/// The identity of the open descriptor `fd`, or `EBADF` when it is not open.
pub fn identity(fd: RawFd) -> Result<Identity, FfiError> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer or fails; it reads no memory of ours.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(FfiError::os(&format!("descriptor {fd}"), &e));
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Records `fd` (open, of `identity`) as `kind`; returns the entry's id for [`remove`]. Forgets
/// the finished sessions whose descriptors the app has closed since.
pub fn insert(fd: RawFd, identity: Identity, kind: Kind) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    with_table(|t| {
        purge_finished(t);
        t.insert(fd, Entry { id, identity, kind });
    });
    id
}

/// Entry `id` of `fd` becomes a finished session with its last `paths`.
pub fn finish(fd: RawFd, id: u64, paths: String) {
    with_table(|t| {
        if let Some(e) = t.get_mut(&fd).filter(|e| e.id == id) {
            e.kind = Kind::Finished(paths.into());
        }
    });
}

/// Forgets finished sessions whose descriptor is closed or now another file: nothing else
/// tells, as no pump watches them any more.
fn purge_finished(t: &mut HashMap<RawFd, Entry>) {
    t.retain(|fd, e| {
        !matches!(e.kind, Kind::Finished(_)) || identity(*fd).ok() == Some(e.identity)
    });
}

/// Forgets entry `id` of `fd`, if it is still the one recorded there.
pub fn remove(fd: RawFd, id: u64) {
    with_table(|t| {
        if t.get(&fd).is_some_and(|e| e.id == id) {
            t.remove(&fd);
        }
    });
}

/// What stands behind `fd`: `EBADF` when it is not open or not a live roam descriptor.
pub fn lookup(fd: RawFd) -> Result<Kind, FfiError> {
    let identity = identity(fd)?;
    with_table(|t| match t.get(&fd) {
        Some(e) if e.identity == identity => Ok(e.kind.clone()),
        _ => Err(FfiError::new(
            libc::EBADF,
            format!(
                "descriptor {fd} is not a roam descriptor (not made by roam_connect, \
                 roam_listen or roam_accept in this process, or its session has ended)"
            ),
        )),
    })
}

/// How many descriptors are recorded whose descriptor is still open (for the leak tests).
pub fn len() -> usize {
    with_table(|t| {
        purge_finished(t);
        t.len()
    })
}
