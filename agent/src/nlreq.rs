//! A blocking netlink request socket, shared by the rtnetlink enforcer and the generic netlink
//! users (`mptcp_pm`, `nl80211`). The wire format (the message walk, errors and their extended
//! ack) is `roam_link::netlink`'s; this is only the socket.
//!
//! The kernel handles these requests inside `sendmsg`, so the answer is already queued when
//! `recv` is called and blocking costs no waiting; the 1 s receive timeout only guards against
//! the unexpected.
use std::fmt::Debug;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};
use roam_link::netlink::header::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use roam_link::netlink::{MessageType, Messages};

/// One socket, one request at a time.
#[derive(Debug)]
pub(crate) struct Requester {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The kernel's own words for the last refusal (extended ack), if it gave any.
    detail: Option<String>,
}

/// `setsockopt(SOL_NETLINK, ...)` options: ask for the kernel's error message with an error,
/// and leave the echoed request out of it.
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

impl Requester {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`) talking to the kernel.
    pub(crate) fn open(protocol: isize) -> io::Result<Requester> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(1)))?;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // Best effort: without them errors carry only their errno.
            let one: libc::c_int = 1;
            // SAFETY: a valid socket descriptor and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(Requester {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
            detail: None,
        })
    }

    /// The kernel's message for the last refused request (e.g. `did not match address and
    /// id`), taken once.
    pub(crate) fn take_detail(&mut self) -> Option<String> {
        self.detail.take()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `payload` with `flags` (plus `NLM_F_REQUEST`) and returns every message of the
    /// answer: the messages of a dump up to its end, or those before the acknowledgement. An
    /// error answer is returned as the errno it carries.
    pub(crate) fn call<T>(&mut self, payload: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seq = self.next_seq();
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(payload),
        );
        m.header.flags = flags | NLM_F_REQUEST;
        m.header.sequence_number = seq;
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        self.exchange(&bytes, seq, flags)?
            .iter()
            .map(|b| match NetlinkMessage::<T>::deserialize(b) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(i),
                    ..
                }) => Ok(i),
                Ok(other) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected netlink message {other:?}"),
                )),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            })
            .collect()
    }

    /// Sends the request `build` makes for a sequence number (its flags must be `flags`, plus
    /// `NLM_F_REQUEST`) and returns the answer's data messages, whole, as [`Requester::call`]
    /// does.
    pub(crate) fn call_raw(
        &mut self,
        flags: u16,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq();
        let bytes = build(seq);
        self.exchange(&bytes, seq, flags)
    }

    /// Sends `request` and collects the data messages answering `seq`, up to `NLMSG_DONE` or
    /// the acknowledgement; a refusal becomes its errno, with the kernel's message kept.
    fn exchange(&mut self, request: &[u8], seq: u32, flags: u16) -> io::Result<Vec<Vec<u8>>> {
        self.socket.send(request, 0)?;
        self.detail = None;
        let mut out = Vec::new();
        loop {
            let n = {
                let mut slice = &mut self.buf[..];
                self.socket.recv(&mut slice, 0)?
            };
            for m in Messages::new(&self.buf[..n.min(self.buf.len())]) {
                if m.header.seq != seq {
                    continue;
                }
                match m.header.kind {
                    MessageType::Done => return Ok(out),
                    MessageType::Error => {
                        let e = m.error().ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "short netlink error")
                        })?;
                        if e.errno == 0 {
                            return Ok(out);
                        }
                        self.detail = e.message;
                        return Err(io::Error::from_raw_os_error(e.errno));
                    }
                    MessageType::Noop | MessageType::Overrun => {}
                    MessageType::Other(_) => {
                        let mut whole = Vec::with_capacity(m.header.len as usize);
                        m.header.emit(&mut whole);
                        whole.extend_from_slice(m.payload);
                        out.push(whole);
                    }
                }
            }
            // A request answered by one message and no acknowledgement ends with it.
            if flags & (NLM_F_ACK | NLM_F_DUMP) == 0 && !out.is_empty() {
                return Ok(out);
            }
        }
    }
}
