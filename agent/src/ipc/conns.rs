//! roamd's table of connected clients and how frames reach them: a reply is written at once;
//! a decision round's pushes are batched and written together ([`FanOut`], two threads when
//! there are many), the first one at once so the first subscriber waits for nobody. A client
//! that cannot take a frame (it does not read, or it is gone) comes back as a client to drop:
//! the daemon drops it and tells the core.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tokio::task::AbortHandle;

use crate::core::ClientId;
use crate::ipc::fanout::{FanOut, Job};
use crate::ipc::proto::{self, Reply, Update};
use crate::ipc::server::{self, Outbox, SendError};

/// The I/O half of a client; who it is and what it may do is the core's (`Core::connect`).
#[derive(Debug)]
pub struct Conn {
    /// The app its credentials map to (for logs).
    pub app: String,
    /// Its uid (for logs).
    pub uid: u32,
    /// Its pid, when the kernel told it (for logs).
    pub pid: Option<i32>,
    /// Where its frames go.
    pub out: Outbox,
    /// Its reader task, stopped when it is dropped.
    pub reader: AbortHandle,
    /// The batch of pushes its last frame went in (0: none yet; batches start at 1).
    batch: u64,
}

impl Conn {
    /// A client just accepted.
    pub fn new(app: String, uid: u32, pid: Option<i32>, out: Outbox, reader: AbortHandle) -> Self {
        Conn {
            app,
            uid,
            pid,
            out,
            reader,
            batch: 0,
        }
    }
}

/// The hash of a [`ClientId`] for the connections' table, looked up once per frame (a
/// thousand times per decision round): one multiplication instead of SipHash. Ids are
/// handed out by roamd in sequence, never chosen by a client, so nobody can aim collisions.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: sequential ids spread over the high bits the table reads.
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The connected clients and the pushes of the decision round under way.
#[derive(Debug)]
pub struct Conns {
    map: HashMap<ClientId, Conn, BuildHasherDefault<IdHasher>>,
    /// The last update pushed and its encoded frame: a decision that goes to a thousand
    /// subscribers of one app is encoded once and the same bytes written to each.
    last_push: Option<(Arc<Update>, Arc<[u8]>)>,
    /// Pushes of this batch not written yet, in the core's order.
    pushes: Vec<(ClientId, Job)>,
    /// The number of the batch `pushes` is (starts at 1: a new connection's `batch` is 0).
    batch: u64,
    /// Whether the batch has begun: its first frame is written at once, the rest queued.
    opened: bool,
    /// Writes a batch on two threads when it is large.
    fanout: FanOut,
}

impl Default for Conns {
    fn default() -> Self {
        Conns {
            map: HashMap::default(),
            last_push: None,
            pushes: Vec::new(),
            batch: 1,
            opened: false,
            fanout: FanOut::default(),
        }
    }
}

impl Conns {
    /// Adds a client just accepted.
    pub fn insert(&mut self, client: ClientId, conn: Conn) {
        self.map.insert(client, conn);
    }

    /// Removes a client, closes its socket and stops its reader; false if it was not here.
    pub fn remove(&mut self, client: ClientId) -> bool {
        let Some(c) = self.map.remove(&client) else {
            return false;
        };
        c.out.close();
        c.reader.abort();
        true
    }

    /// Whether a batch of pushes is open (not all written yet).
    pub fn batch_open(&self) -> bool {
        self.opened
    }

    /// Writes a reply at once (after the open batch, so a client's frames keep their order).
    /// Returns the clients to drop.
    pub fn reply(&mut self, client: ClientId, reply: &Reply) -> Vec<ClientId> {
        let mut dropped = self.flush();
        let frame: Arc<[u8]> = proto::encode(reply).into();
        dropped.extend(self.send(client, frame));
        dropped
    }

    /// Queues a decision in the batch. The core shares one update among the subscribers told
    /// the same (one app and flow interval), and they come in a row: it is encoded once. The
    /// batch's first frame is written at once; a second frame for a client already in the
    /// batch writes the batch first, so one client's frames cannot cross. Returns the clients
    /// to drop.
    pub fn push(&mut self, client: ClientId, update: Arc<Update>) -> Vec<ClientId> {
        let frame = match &self.last_push {
            Some((last, frame)) if Arc::ptr_eq(last, &update) => frame.clone(),
            _ => {
                let frame: Arc<[u8]> = proto::encode(&Reply::Update((*update).clone())).into();
                self.last_push = Some((update, frame.clone()));
                frame
            }
        };
        let Some(c) = self.map.get_mut(&client) else {
            return Vec::new();
        };
        if self.opened && c.batch != self.batch {
            c.batch = self.batch;
            self.pushes.push((client, (c.out.clone(), frame)));
            return Vec::new();
        }
        let mut dropped = if self.opened {
            self.flush()
        } else {
            Vec::new()
        };
        if let Some(c) = self.map.get_mut(&client) {
            c.batch = self.batch;
        }
        self.opened = true;
        dropped.extend(self.send(client, frame));
        dropped
    }

    /// Writes the open batch's queued pushes, on two threads when there are many, and closes
    /// the batch. Returns the clients that could not take theirs, to drop.
    pub fn flush(&mut self) -> Vec<ClientId> {
        if !self.opened {
            return Vec::new();
        }
        self.opened = false;
        self.batch += 1;
        if self.pushes.is_empty() {
            return Vec::new();
        }
        let (clients, jobs): (Vec<ClientId>, Vec<_>) =
            std::mem::take(&mut self.pushes).into_iter().unzip();
        self.fanout
            .send_all(jobs)
            .into_iter()
            .filter_map(|(i, e)| self.failed(clients[i], e))
            .collect()
    }

    /// Sends a frame to a client: written at once if its socket has room, else queued.
    fn send(&mut self, client: ClientId, frame: Arc<[u8]>) -> Option<ClientId> {
        let e = self.map.get(&client)?.out.send(frame).err()?;
        self.failed(client, e)
    }

    /// A frame `client` could not take: it does not read (its queue is full) or is gone;
    /// either way it is to be dropped, so it never holds up the others.
    fn failed(&self, client: ClientId, e: SendError) -> Option<ClientId> {
        let c = self.map.get(&client)?;
        if let SendError::Full = e {
            tracing::warn!(
                client,
                app = %c.app,
                uid = c.uid,
                pid = c.pid,
                queued = server::CLIENT_QUEUE,
                "client does not read its events; dropping it"
            );
        }
        Some(client)
    }
}
