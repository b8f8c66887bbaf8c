//! The echo probe packet: 24 bytes, the same size both ways so a reflector can never amplify.
//!
//! ```text
//! 0      4    5       8            16           24
//! | RMP1 | op | 0 0 0 | token (BE) | seq (BE)   |
//! ```
//! `op` is 1 for a request, 2 for a reply. The token is random per agent run: a reply that
//! does not carry it was not asked for and is ignored.

/// Size of every probe packet.
pub const LEN: usize = 24;
const MAGIC: &[u8; 4] = b"RMP1";
const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;

/// A parsed probe packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// True for a reply.
    pub reply: bool,
    /// The sender's run token.
    pub token: u64,
    /// The sequence number.
    pub seq: u64,
}

impl Probe {
    /// Parses exactly [`LEN`] bytes; anything else is not a probe.
    pub fn parse(bytes: &[u8]) -> Option<Probe> {
        let bytes: &[u8; LEN] = bytes.try_into().ok()?;
        if &bytes[..4] != MAGIC || bytes[5..8] != [0, 0, 0] {
            return None;
        }
        let reply = match bytes[4] {
            OP_REQUEST => false,
            OP_REPLY => true,
            _ => return None,
        };
        let mut token = [0; 8];
        token.copy_from_slice(&bytes[8..16]);
        let mut seq = [0; 8];
        seq.copy_from_slice(&bytes[16..24]);
        Some(Probe {
            reply,
            token: u64::from_be_bytes(token),
            seq: u64::from_be_bytes(seq),
        })
    }

    /// The wire bytes.
    pub fn emit(&self) -> [u8; LEN] {
        let mut b = [0; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = if self.reply { OP_REPLY } else { OP_REQUEST };
        b[8..16].copy_from_slice(&self.token.to_be_bytes());
        b[16..24].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

/// The fuzz target's body (agent/fuzz, `probe_packet`) and its corpus replay: `data` as a
/// datagram arriving at the prober or the reflector. Never panics on any input; a packet
/// accepted is exactly what [`Probe::emit`] writes for it, and the reflector's answer to a
/// request is a packet of the same size.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    if let Some(p) = Probe::parse(data) {
        assert_eq!(p.emit()[..], data[..], "{p:?} does not round-trip");
        let answer = Probe { reply: true, ..p }.emit();
        assert_eq!(answer.len(), data.len(), "the reflector would amplify");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_emit_agree_and_anything_else_is_refused() {
        let p = Probe {
            reply: false,
            token: 0x0102_0304_0506_0708,
            seq: 42,
        };
        let b = p.emit();
        assert_eq!(&b[..8], b"RMP1\x01\0\0\0");
        assert_eq!(Probe::parse(&b), Some(p));
        assert_eq!(Probe::parse(&b[..23]), None);
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Probe::parse(&long), None);
        for (i, v) in [(0, b'X'), (4, 3), (5, 1)] {
            let mut bad = b;
            bad[i] = v;
            assert_eq!(Probe::parse(&bad), None, "byte {i}");
        }
    }
}
