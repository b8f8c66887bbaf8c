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
    /// The kernel's own words for the last refusal (extended ack), if it gave any.
    detail: Option<String>,
}

/// `setsockopt(SOL_NETLINK, ...)` options: ask for the kernel's error message with an error,
/// and leave the echoed request out of it.
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
/// Flags of an error message: the request was not echoed / attributes follow.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the error message string.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's message in an error's attributes: `rest` is what follows the error code (the
/// echoed request header, its body unless `capped`, then attributes when `tlvs`).
fn extack_message(rest: &[u8], capped: bool, tlvs: bool) -> Option<String> {
    if !tlvs {
        return None;
    }
    let echoed = if capped {
        16
    } else {
        let len = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        len.checked_add(3)? & !3
    };
    let mut a = rest.get(echoed..)?;
    while a.len() >= 4 {
        let len = u16::from_ne_bytes([a[0], a[1]]) as usize;
        let kind = u16::from_ne_bytes([a[2], a[3]]) & 0x3fff;
        if len < 4 || len > a.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let v = &a[4..len];
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
        a = &a[((len + 3) & !3).min(a.len())..];
    }
    None
}

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
        self.detail = None;

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
                                Some(_) => {
                                    let f = m.header.flags;
                                    self.detail = extack_message(
                                        &e.header,
                                        f & NLM_F_CAPPED != 0,
                                        f & NLM_F_ACK_TLVS != 0,
                                    );
                                    Err(e.to_io())
                                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(a.len().div_ceil(4) * 4, 0);
        a
    }

    #[test]
    fn the_kernels_message_is_read_after_the_echoed_request() {
        let mut capped = vec![0u8; 16];
        capped.extend(attr(4, &7u32.to_ne_bytes()));
        capped.extend(attr(1, b"did not match address and id\0"));
        assert_eq!(
            extack_message(&capped, true, true).as_deref(),
            Some("did not match address and id")
        );
        // Not capped: the whole request (24 bytes here) is echoed before the attributes.
        let mut full = 24u32.to_ne_bytes().to_vec();
        full.resize(24, 0);
        full.extend(attr(1, b"invalid token\0"));
        assert_eq!(
            extack_message(&full, false, true).as_deref(),
            Some("invalid token")
        );
        assert_eq!(
            extack_message(&capped, true, false),
            None,
            "no attributes flagged"
        );
    }

    #[test]
    fn malformed_attributes_give_no_message_and_no_panic() {
        assert_eq!(extack_message(&[], true, true), None);
        assert_eq!(extack_message(&[1, 2, 3], false, true), None);
        let mut huge = u32::MAX.to_ne_bytes().to_vec();
        huge.resize(20, 0);
        assert_eq!(extack_message(&huge, false, true), None);
        let mut bad = vec![0u8; 16];
        bad.extend([200, 0, 1, 0, b'x']);
        assert_eq!(extack_message(&bad, true, true), None);
        let mut short = vec![0u8; 16];
        short.extend([2, 0, 1, 0]);
        assert_eq!(extack_message(&short, true, true), None);
    }
}
