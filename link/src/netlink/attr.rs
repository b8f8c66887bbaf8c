//! Netlink attributes (`struct nlattr`, `include/uapi/linux/netlink.h`): a 4-byte header
//! (length including the header, type) and a value padded to 4 bytes. Nested attributes carry
//! more attributes as their value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Set on the type of an attribute whose value is more attributes.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// Set on the type of an attribute whose value is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// The bits of `nla_type` that are the type.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
/// Attributes (and netlink messages) start on 4-byte boundaries.
pub const NLA_ALIGNTO: usize = 4;
/// The size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;

/// `len` rounded up to the netlink alignment.
pub const fn align(len: usize) -> usize {
    (len + NLA_ALIGNTO - 1) & !(NLA_ALIGNTO - 1)
}

/// One attribute, borrowed from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    raw_type: u16,
    value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The type, without the nested and byte-order flags.
    pub fn kind(&self) -> u16 {
        self.raw_type & NLA_TYPE_MASK
    }

    /// Whether the sender flagged the value as nested attributes (the kernel does not always
    /// set the flag on nests; [`Attr::nested`] works either way).
    pub fn is_nested(&self) -> bool {
        self.raw_type & NLA_F_NESTED != 0
    }

    /// The value, without padding.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The value read as attributes.
    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.value)
    }

    /// A one-byte value; `None` when the value has another size.
    pub fn u8(&self) -> Option<u8> {
        self.fixed::<1>().map(|b| b[0])
    }

    /// A two-byte value in host order.
    pub fn u16(&self) -> Option<u16> {
        self.fixed().map(u16::from_ne_bytes)
    }

    /// A two-byte value in network order (ports).
    pub fn be16(&self) -> Option<u16> {
        self.fixed().map(u16::from_be_bytes)
    }

    /// A four-byte value in host order.
    pub fn u32(&self) -> Option<u32> {
        self.fixed().map(u32::from_ne_bytes)
    }

    /// A four-byte signed value in host order.
    pub fn i32(&self) -> Option<i32> {
        self.fixed().map(i32::from_ne_bytes)
    }

    /// An eight-byte value in host order.
    pub fn u64(&self) -> Option<u64> {
        self.fixed().map(u64::from_ne_bytes)
    }

    /// A four-byte IPv4 address (network order, as `struct in_addr`).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.fixed::<4>().map(Ipv4Addr::from)
    }

    /// A sixteen-byte IPv6 address (`struct in6_addr`).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.fixed::<16>().map(Ipv6Addr::from)
    }

    /// A string value up to its first NUL (or its end), lossily decoded.
    pub fn string(&self) -> String {
        let end = self
            .value
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }

    fn fixed<const N: usize>(&self) -> Option<[u8; N]> {
        self.value.try_into().ok()
    }
}

/// The attributes of a buffer, in order. The walk stops at the end or at the first malformed
/// attribute (a length below the header's or past the buffer); [`Attrs::malformed`] tells
/// which.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> Attrs<'a> {
    /// Walks the attributes in `buf`.
    pub fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs {
            rest: buf,
            malformed: false,
        }
    }

    /// Whether the walk stopped at a malformed attribute rather than at the end.
    pub fn malformed(&self) -> bool {
        self.malformed
    }

    /// The first attribute of type `kind`.
    pub fn get(self, kind: u16) -> Option<Attr<'a>> {
        self.into_iter().find(|a| a.kind() == kind)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.rest.is_empty() || self.malformed {
            return None;
        }
        let parsed = (|| {
            let len = usize::from(u16::from_ne_bytes(self.rest.get(0..2)?.try_into().ok()?));
            let raw_type = u16::from_ne_bytes(self.rest.get(2..4)?.try_into().ok()?);
            let value = self.rest.get(NLA_HDRLEN..len)?;
            Some((len, raw_type, value))
        })();
        let Some((len, raw_type, value)) = parsed else {
            self.malformed = true;
            return None;
        };
        // The last attribute may lack its padding.
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Attr { raw_type, value })
    }
}

/// Appends one attribute: header, value, padding to 4 bytes.
///
/// # Panics
/// When the value is longer than an attribute can be (65,531 bytes); roam's values are a
/// few bytes.
pub fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(NLA_HDRLEN + value.len()).expect("netlink attribute over 64 KiB");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// Appends a nested attribute (type flagged [`NLA_F_NESTED`]) whose attributes `fill` writes.
pub fn put_nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(out);
    let len = u16::try_from(out.len() - start).expect("netlink attribute over 64 KiB");
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out.resize(align(out.len()), 0);
}

/// Appends an address as its octets (network order): 4 bytes for IPv4, 16 for IPv6.
pub fn put_ip(out: &mut Vec<u8>, kind: u16, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => put(out, kind, &a.octets()),
        IpAddr::V6(a) => put(out, kind, &a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_nested_and_read_back() {
        let mut b = Vec::new();
        put(&mut b, 1, &[7]);
        put_nested(&mut b, 2, |b| put(b, 3, &5u32.to_ne_bytes()));
        assert_eq!(b.len(), 8 + 12);
        let all: Vec<Attr<'_>> = Attrs::new(&b).collect();
        assert_eq!((all[0].kind(), all[0].u8()), (1, Some(7)));
        assert!(all[1].is_nested() && all[1].kind() == 2);
        assert_eq!(all[1].nested().get(3).and_then(|a| a.u32()), Some(5));
        assert_eq!(all[0].u32(), None, "a one-byte value is not a u32");
    }

    #[test]
    fn a_malformed_attribute_ends_the_walk_without_reading_past_the_buffer() {
        let mut a = Attrs::new(&[200, 0, 1, 0, 9]);
        assert_eq!(a.next(), None);
        assert!(a.malformed());
        let mut a = Attrs::new(&[2, 0, 1, 0]);
        assert_eq!(a.next(), None, "shorter than its own header");
        assert!(a.malformed());
        let mut a = Attrs::new(&[5, 0, 1, 0, 9]);
        assert_eq!(
            a.next().map(|a| a.value()),
            Some(&[9][..]),
            "unpadded last one"
        );
        assert_eq!(a.next(), None);
        assert!(!a.malformed());
    }
}
