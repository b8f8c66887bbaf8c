//! A blocking netlink request socket, shared by the rtnetlink enforcer and the generic netlink
//! users (`mptcp_pm`, `nl80211`).
//!
//! The kernel handles these requests inside `sendmsg`, so the answer is already queued when
//! `recv` is called and blocking costs no waiting; the 1 s receive timeout only guards against
//! the unexpected.
use std::fmt::Debug;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// One socket, one request at a time.
#[derive(Debug)]
pub(crate) struct Requester {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Requester {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`) talking to the kernel.
    pub(crate) fn open(protocol: isize) -> io::Result<Requester> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(Requester {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends `payload` with `flags` (plus `NLM_F_REQUEST`) and returns every message of the
    /// answer: the messages of a dump up to its end, or those before the acknowledgement. An
    /// error answer is returned as the errno it carries.
    pub(crate) fn call<T>(&mut self, payload: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(payload),
        );
        m.header.flags = flags | NLM_F_REQUEST;
        m.header.sequence_number = seq;
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut out = Vec::new();
        loop {
            let n = {
                let mut slice = &mut self.buf[..];
                self.socket.recv(&mut slice, 0)?
            };
            let mut rest = &self.buf[..n.min(self.buf.len())];
            while !rest.is_empty() {
                let m = NetlinkMessage::<T>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == seq {
                    match m.payload {
                        NetlinkPayload::InnerMessage(i) => out.push(i),
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(e.to_io()),
                            };
                        }
                        _ => {}
                    }
                }
                if len == 0 || len > rest.len() {
                    break;
                }
                rest = &rest[((len + 3) & !3).min(rest.len())..];
            }
            // A request answered by one message and no acknowledgement ends with it.
            if flags & (netlink_packet_core::NLM_F_ACK | netlink_packet_core::NLM_F_DUMP) == 0
                && !out.is_empty()
            {
                return Ok(out);
            }
        }
    }
}
