//! The netlink message header (`struct nlmsghdr`), the messages of a datagram, and the
//! kernel's error and acknowledgement messages (`struct nlmsgerr` with its extended ack).

use super::attr::{Attrs, align};

/// The size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

/// `NLM_F_REQUEST`: a request (every message sent to the kernel).
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: one part of a multipart answer, ended by `NLMSG_DONE`.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`: answer with an acknowledgement (an error message with errno 0).
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`): every object, as a multipart answer.
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_CAPPED`, on an error message: the request was not echoed in full, only its header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`, on an error message: extended-ack attributes follow the request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// `NLMSGERR_ATTR_MSG`: the kernel's message, a string.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLMSGERR_ATTR_OFFS`: the offset of the offending attribute in the request, a u32.
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

kernel_enum! {
    /// The control message types every netlink family shares (`NLMSG_*`); the rest are the
    /// family's own (rtnetlink message types, a generic netlink family's id, `SOCK_DIAG_BY_FAMILY`).
    pub enum MessageType: u16 {
        /// `NLMSG_NOOP` (1): nothing.
        Noop = 1,
        /// `NLMSG_ERROR` (2): an error, or with errno 0 an acknowledgement.
        Error = 2,
        /// `NLMSG_DONE` (3): the end of a multipart answer.
        Done = 3,
        /// `NLMSG_OVERRUN` (4): data was lost.
        Overrun = 4,
    }
}

/// `struct nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message's length, header included (`nlmsg_len`).
    pub len: u32,
    /// Its type (`nlmsg_type`).
    pub kind: MessageType,
    /// `NLM_F_*` flags (`nlmsg_flags`).
    pub flags: u16,
    /// Sequence number, echoed in answers (`nlmsg_seq`).
    pub seq: u32,
    /// Sender port id, 0 for the kernel (`nlmsg_pid`).
    pub pid: u32,
}

impl Header {
    /// Reads a header from the start of `b`; `None` when `b` is shorter than a header.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let u32_at = |o: usize| Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?));
        let u16_at = |o: usize| Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?));
        Some(Header {
            len: u32_at(0)?,
            kind: MessageType::from(u16_at(4)?),
            flags: u16_at(6)?,
            seq: u32_at(8)?,
            pid: u32_at(12)?,
        })
    }

    /// Appends the header's 16 bytes.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&u16::from(self.kind).to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
    }
}

/// A whole message to the kernel: header (`pid` 0, `len` set) then `body`.
pub fn message(kind: MessageType, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    let len = u32::try_from(NLMSG_HDRLEN + body.len()).unwrap_or(u32::MAX);
    Header {
        len,
        kind,
        flags,
        seq,
        pid: 0,
    }
    .emit(&mut out);
    out.extend_from_slice(body);
    out
}

/// One message of a datagram: its header and what follows it (padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header.
    pub header: Header,
    /// The bytes after the header, up to `header.len`.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The error or acknowledgement this message carries, when it is an `NLMSG_ERROR`.
    pub fn error(&self) -> Option<ErrorMessage> {
        (self.header.kind == MessageType::Error)
            .then(|| ErrorMessage::parse(self.payload, self.header.flags))
            .flatten()
    }
}

/// The messages of one datagram, in order. The walk stops at the end or at the first message
/// whose length is below a header's or past the datagram.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    /// Walks the messages in `datagram`.
    pub fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let header = Header::parse(self.rest)?;
        let len = header.len as usize;
        let Some(payload) = self.rest.get(NLMSG_HDRLEN..len) else {
            self.rest = &[];
            return None;
        };
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Message { header, payload })
    }
}

/// `struct nlmsgerr` and its extended ack: the answer to a request sent with `NLM_F_ACK`, or
/// the kernel's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// The errno, positive; 0 for an acknowledgement.
    pub errno: i32,
    /// The header of the request this answers.
    pub request: Header,
    /// The kernel's own words for a refusal (`NLMSGERR_ATTR_MSG`, e.g. `invalid token`), when
    /// the socket asked for extended acks.
    pub message: Option<String>,
    /// The offset in the request of the attribute at fault (`NLMSGERR_ATTR_OFFS`).
    pub offset: Option<u32>,
}

impl ErrorMessage {
    /// Parses the payload of an `NLMSG_ERROR` message whose header had `flags`: the error
    /// code, the echoed request (its header alone when `NLM_F_CAPPED`), then attributes when
    /// `NLM_F_ACK_TLVS`.
    pub fn parse(payload: &[u8], flags: u16) -> Option<ErrorMessage> {
        let code = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
        let echoed = payload.get(4..)?;
        let request = Header::parse(echoed)?;
        let mut out = ErrorMessage {
            errno: code.checked_neg()?,
            request,
            message: None,
            offset: None,
        };
        if flags & NLM_F_ACK_TLVS == 0 {
            return Some(out);
        }
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align(request.len as usize)
        };
        // An echo longer than the message leaves the attributes unknown, not the error.
        for a in Attrs::new(echoed.get(skip..).unwrap_or(&[])) {
            match a.kind() {
                NLMSGERR_ATTR_MSG => out.message = Some(a.string()),
                NLMSGERR_ATTR_OFFS => out.offset = a.u32(),
                _ => {}
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr::put;

    #[test]
    fn messages_of_a_datagram_are_walked_with_bounds() {
        let mut d = message(MessageType::Other(20), NLM_F_REQUEST, 7, &[1, 2, 3]);
        d.resize(align(d.len()), 0);
        d.extend(message(MessageType::Done, 0, 7, &[0; 4]));
        let m: Vec<Message<'_>> = Messages::new(&d).collect();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].header.seq, m[0].payload), (7, &[1, 2, 3][..]));
        assert_eq!(m[1].header.kind, MessageType::Done);
        // A length past the datagram ends the walk.
        let mut long = d.clone();
        long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(Messages::new(&long).count(), 0);
        assert_eq!(Messages::new(&d[..10]).count(), 0);
    }

    #[test]
    fn an_error_reads_its_message_after_a_full_or_capped_echo() {
        let req = message(
            MessageType::Other(0x1c),
            NLM_F_REQUEST | NLM_F_ACK,
            3,
            &[0; 8],
        );
        let mut full = (-22i32).to_ne_bytes().to_vec();
        full.extend(&req);
        put(&mut full, NLMSGERR_ATTR_MSG, b"invalid token\0");
        let e = ErrorMessage::parse(&full, NLM_F_ACK_TLVS).unwrap();
        assert_eq!((e.errno, e.request.seq), (22, 3));
        assert_eq!(e.message.as_deref(), Some("invalid token"));
        let mut capped = (-22i32).to_ne_bytes().to_vec();
        capped.extend(&req[..NLMSG_HDRLEN]);
        put(&mut capped, NLMSGERR_ATTR_OFFS, &20u32.to_ne_bytes());
        let e = ErrorMessage::parse(&capped, NLM_F_ACK_TLVS | NLM_F_CAPPED).unwrap();
        assert_eq!((e.message, e.offset), (None, Some(20)));
        assert_eq!(ErrorMessage::parse(&full[..10], 0), None);
        // An echoed length past the end, a malformed attribute: the errno stays, no message.
        let mut huge = (-22i32).to_ne_bytes().to_vec();
        huge.extend(&req);
        huge[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        let e = ErrorMessage::parse(&huge, NLM_F_ACK_TLVS).unwrap();
        assert_eq!((e.errno, e.message), (22, None));
        let mut bad = (-22i32).to_ne_bytes().to_vec();
        bad.extend(&req[..NLMSG_HDRLEN]);
        bad.extend([200, 0, 1, 0, b'x']);
        let e = ErrorMessage::parse(&bad, NLM_F_ACK_TLVS | NLM_F_CAPPED).unwrap();
        assert_eq!(e.message, None);
        assert_eq!(
            ErrorMessage::parse(&full, 0).unwrap().message,
            None,
            "no attributes flagged"
        );
    }
}
