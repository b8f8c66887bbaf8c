//! Generic netlink: the header after `nlmsghdr` (`struct genlmsghdr`) and the `nlctrl` family
//! that names the others (`include/uapi/linux/genetlink.h`).

use super::attr::{self, Attrs};
use super::header::{self, Message, MessageType};

/// The size of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;

/// `struct genlmsghdr`: the family's command and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenlHeader {
    /// The command (`cmd`), the family's own numbering.
    pub cmd: u8,
    /// The family's protocol version (`version`).
    pub version: u8,
}

/// A generic netlink message: its netlink type is the family's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenlMessage<'a> {
    /// The family's id (the netlink message type).
    pub family: u16,
    /// Command and version.
    pub header: GenlHeader,
    /// The attributes.
    pub attrs: &'a [u8],
}

impl<'a> GenlMessage<'a> {
    /// Reads a generic netlink message; `None` for control messages and short payloads.
    pub fn parse(m: &Message<'a>) -> Option<GenlMessage<'a>> {
        let MessageType::Other(family) = m.header.kind else {
            return None;
        };
        Some(GenlMessage {
            family,
            header: GenlHeader {
                cmd: *m.payload.first()?,
                version: *m.payload.get(1)?,
            },
            attrs: m.payload.get(GENL_HDRLEN..)?,
        })
    }
}

/// A whole generic netlink request: netlink header (`flags`, `seq`), genl header, `attrs`.
pub fn request(family: u16, flags: u16, seq: u32, header: GenlHeader, attrs: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(GENL_HDRLEN + attrs.len());
    body.extend_from_slice(&[header.cmd, header.version, 0, 0]);
    body.extend_from_slice(attrs);
    header::message(MessageType::Other(family), flags, seq, &body)
}

/// `GENL_ID_CTRL`: the `nlctrl` family's fixed id.
pub const GENL_ID_CTRL: u16 = 0x10;
/// The `nlctrl` version roam sends (what it always sent; the kernel accepts any).
pub const CTRL_VERSION: u8 = 2;

kernel_enum! {
    /// `nlctrl` commands (`CTRL_CMD_*`).
    pub enum CtrlCommand: u8 {
        /// `CTRL_CMD_NEWFAMILY` (1): a family's description (the answer to `GETFAMILY`).
        NewFamily = 1,
        /// `CTRL_CMD_DELFAMILY` (2).
        DelFamily = 2,
        /// `CTRL_CMD_GETFAMILY` (3): describe a family, by name or id.
        GetFamily = 3,
    }
}

/// `nlctrl` attribute types (`CTRL_ATTR_*`) roam reads or writes.
pub mod ctrl_attr {
    /// `CTRL_ATTR_FAMILY_ID`: u16.
    pub const FAMILY_ID: u16 = 1;
    /// `CTRL_ATTR_FAMILY_NAME`: string.
    pub const FAMILY_NAME: u16 = 2;
    /// `CTRL_ATTR_VERSION`: u32.
    pub const VERSION: u16 = 3;
    /// `CTRL_ATTR_MCAST_GROUPS`: nest of nests of `MCAST_GRP_*`.
    pub const MCAST_GROUPS: u16 = 7;
    /// `CTRL_ATTR_MCAST_GRP_NAME`: string.
    pub const MCAST_GRP_NAME: u16 = 1;
    /// `CTRL_ATTR_MCAST_GRP_ID`: u32.
    pub const MCAST_GRP_ID: u16 = 2;
}

/// The request for family `name`'s description (`CTRL_CMD_GETFAMILY`, acknowledged).
pub fn get_family(name: &str, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut z = name.as_bytes().to_vec();
    z.push(0);
    attr::put(&mut attrs, ctrl_attr::FAMILY_NAME, &z);
    request(
        GENL_ID_CTRL,
        header::NLM_F_REQUEST | header::NLM_F_ACK,
        seq,
        GenlHeader {
            cmd: CtrlCommand::GetFamily.into(),
            version: CTRL_VERSION,
        },
        &attrs,
    )
}

/// A family as `nlctrl` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Its id: the netlink message type of its messages.
    pub id: u16,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Its multicast groups: name and id (the id to join).
    pub groups: Vec<(String, u32)>,
}

impl Family {
    /// Reads a `CTRL_CMD_NEWFAMILY` message's attributes; `None` without an id.
    pub fn parse(attrs: &[u8]) -> Option<Family> {
        let mut f = Family {
            id: 0,
            name: String::new(),
            version: 0,
            groups: Vec::new(),
        };
        let mut have_id = false;
        for a in Attrs::new(attrs) {
            match a.kind() {
                ctrl_attr::FAMILY_ID => {
                    f.id = a.u16()?;
                    have_id = true;
                }
                ctrl_attr::FAMILY_NAME => f.name = a.string(),
                ctrl_attr::VERSION => f.version = a.u32().unwrap_or(0),
                ctrl_attr::MCAST_GROUPS => {
                    for g in a.nested() {
                        let g = g.nested();
                        let name = g.clone().get(ctrl_attr::MCAST_GRP_NAME).map(|n| n.string());
                        let id = g.get(ctrl_attr::MCAST_GRP_ID).and_then(|i| i.u32());
                        if let (Some(name), Some(id)) = (name, id) {
                            f.groups.push((name, id));
                        }
                    }
                }
                _ => {}
            }
        }
        have_id.then_some(f)
    }

    /// The id of multicast group `name`, if the family has it.
    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }
}
