//! The typed netlink formats against bytes captured once from Linux 6.18
//! (`link/tests/data/`, made by `capture.py` there): parsing the kernel's messages gives the
//! values the capture set up, and roam's emitters give back, byte for byte, the requests the
//! kernel accepted.

use std::net::{IpAddr, SocketAddr};

use roam_link::netlink::genl::{self, CtrlCommand, Family, GenlMessage};
use roam_link::netlink::header::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use roam_link::netlink::mptcp_pm::{self, Address, Command, EndpointFlags, Event, EventType};
use roam_link::netlink::sock_diag::{self, SubflowFlags, UlpName};
use roam_link::netlink::{ErrorMessage, Message, MessageType, Messages};

/// One capture: the bytes sent (`>`) and each datagram received (`<`).
struct Capture {
    sent: Option<Vec<u8>>,
    received: Vec<Vec<u8>>,
}

fn capture(name: &str) -> Capture {
    let path = format!("{}/tests/data/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let mut c = Capture {
        sent: None,
        received: Vec::new(),
    };
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("> ") {
            c.sent = Some(hex(h.trim()));
        } else if let Some(h) = line.strip_prefix("< ") {
            c.received.push(hex(h.trim()));
        }
    }
    c
}

fn messages(datagrams: &[Vec<u8>]) -> Vec<Message<'_>> {
    datagrams.iter().flat_map(|d| Messages::new(d)).collect()
}

/// The one message of a datagram, which must be an error or acknowledgement.
fn answer(c: &Capture) -> ErrorMessage {
    let m = messages(&c.received);
    assert_eq!(m.len(), 1, "one answer");
    m[0].error().expect("an NLMSG_ERROR")
}

fn sent_request(c: &Capture) -> (Message<'_>, GenlMessage<'_>, mptcp_pm::Request) {
    let sent = c.sent.as_deref().expect("a request");
    let m = Messages::new(sent).next().expect("a message");
    let g = GenlMessage::parse(&m).expect("generic netlink");
    let r = mptcp_pm::Request::parse(g.header.cmd, g.attrs);
    (m, g, r)
}

/// The `mptcp_pm` family id, as the kernel named it in the capture.
fn mptcp_pm_family() -> Family {
    let c = capture("ctrl_getfamily_mptcp_pm");
    let m = messages(&c.received);
    let g = GenlMessage::parse(&m[0]).expect("NEWFAMILY");
    assert_eq!(g.family, genl::GENL_ID_CTRL);
    assert_eq!(CtrlCommand::from(g.header.cmd), CtrlCommand::NewFamily);
    Family::parse(g.attrs).expect("a family id")
}

#[test]
fn nlctrl_names_the_mptcp_pm_family_and_its_events_group() {
    let c = capture("ctrl_getfamily_mptcp_pm");
    assert_eq!(
        c.sent.as_deref(),
        Some(&genl::get_family(mptcp_pm::FAMILY_NAME, 1)[..])
    );
    let f = mptcp_pm_family();
    assert_eq!(f.name, mptcp_pm::FAMILY_NAME);
    assert_eq!(f.version, u32::from(mptcp_pm::VERSION));
    assert!(f.group(mptcp_pm::EVENTS_GROUP).is_some(), "{:?}", f.groups);
    // Every other capture's request went to the id the kernel gave here.
    let add = capture("pm_add_addr_v4");
    let (m, _, _) = sent_request(&add);
    assert_eq!(m.header.kind, MessageType::Other(f.id));
    // The dump ends with an acknowledgement of the request (seq 1).
    let m = messages(&c.received);
    let ack = m.last().unwrap().error().expect("ack");
    assert_eq!((ack.errno, ack.request.seq), (0, 1));
}

#[test]
fn endpoint_requests_are_the_bytes_the_kernel_accepted() {
    let fid = mptcp_pm_family().id;
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let v4: IpAddr = "198.18.1.1".parse().unwrap();
    let cases = [
        (
            "pm_add_addr_v4",
            2,
            mptcp_pm::Request {
                addr: Some(Address {
                    addr: Some(v4),
                    id: Some(201),
                    flags: Some(EndpointFlags::SUBFLOW),
                    if_idx: Some(3),
                    port: None,
                }),
                ..mptcp_pm::Request::new(Command::AddAddr)
            },
        ),
        (
            "pm_add_addr_v6",
            3,
            mptcp_pm::Request {
                addr: Some(Address {
                    addr: Some("2001:db8::1".parse().unwrap()),
                    id: Some(202),
                    port: Some(5000),
                    flags: Some(EndpointFlags::SIGNAL | EndpointFlags::BACKUP),
                    if_idx: None,
                }),
                ..mptcp_pm::Request::new(Command::AddAddr)
            },
        ),
        (
            "pm_set_flags_backup",
            6,
            mptcp_pm::Request {
                addr: Some(Address {
                    addr: Some(v4),
                    id: Some(201),
                    flags: Some(EndpointFlags::BACKUP),
                    ..Address::default()
                }),
                ..mptcp_pm::Request::new(Command::SetFlags)
            },
        ),
        (
            "pm_del_addr",
            9,
            mptcp_pm::Request {
                addr: Some(Address {
                    id: Some(201),
                    ..Address::default()
                }),
                ..mptcp_pm::Request::new(Command::DelAddr)
            },
        ),
    ];
    for (name, seq, want) in cases {
        let c = capture(name);
        let (_, g, got) = sent_request(&c);
        assert_eq!(g.header.version, mptcp_pm::VERSION, "{name}");
        assert_eq!(got, want, "{name}");
        assert_eq!(
            want.emit(fid, flags, seq),
            c.sent.clone().unwrap(),
            "{name}"
        );
        let a = answer(&c);
        assert_eq!((a.errno, a.request.seq), (0, seq), "{name}: acknowledged");
    }
}

#[test]
fn the_endpoint_dump_lists_what_was_added() {
    let fid = mptcp_pm_family().id;
    let c = capture("pm_get_addr_dump");
    assert_eq!(
        mptcp_pm::Request::new(Command::GetAddr).emit(fid, NLM_F_REQUEST | NLM_F_DUMP, 4),
        c.sent.clone().unwrap()
    );
    let m = messages(&c.received);
    assert_eq!(m.last().unwrap().header.kind, MessageType::Done);
    let eps: Vec<Address> = m
        .iter()
        .filter_map(GenlMessage::parse)
        .map(|g| {
            assert_eq!(Command::from(g.header.cmd), Command::GetAddr);
            mptcp_pm::Request::parse(g.header.cmd, g.attrs)
                .addr
                .unwrap()
        })
        .collect();
    assert_eq!(
        eps,
        [
            Address {
                addr: Some("198.18.1.1".parse().unwrap()),
                id: Some(201),
                // The kernel writes the port even when there is none.
                port: Some(0),
                flags: Some(EndpointFlags::SUBFLOW),
                if_idx: Some(3),
            },
            Address {
                addr: Some("2001:db8::1".parse().unwrap()),
                id: Some(202),
                port: Some(5000),
                flags: Some(EndpointFlags::SIGNAL | EndpointFlags::BACKUP),
                if_idx: None,
            },
        ]
    );
}

#[test]
fn refusals_carry_the_kernels_reason() {
    let a = answer(&capture("pm_del_addr_missing"));
    assert_eq!(a.errno, 22);
    assert_eq!(a.message.as_deref(), Some("address not found"));
    let a = answer(&capture("pm_subflow_create_bad_token"));
    assert_eq!(a.errno, 22);
    assert_eq!(a.message.as_deref(), Some("invalid token"));
    assert_eq!(a.request.seq, 13);
    // sock_diag: no extended ack, the whole request echoed.
    let c = capture("sock_diag_no_such_socket");
    let a = answer(&c);
    assert_eq!((a.errno, a.message), (2, None));
    assert_eq!(a.request.len as usize, c.sent.unwrap().len());
}

/// The events a capture's datagrams carry.
fn events(name: &str) -> Vec<Event> {
    let c = capture(name);
    messages(&c.received)
        .iter()
        .map(|m| {
            let g = GenlMessage::parse(m).expect("an event");
            Event::parse(g.header.cmd, g.attrs)
        })
        .collect()
}

/// The userspace PM connection's token and its events.
fn userspace_connection() -> (u32, Vec<Event>) {
    let evs = events("events_userspace_pm");
    (evs[0].token.unwrap(), evs)
}

#[test]
fn userspace_pm_requests_are_the_bytes_the_kernel_accepted() {
    let fid = mptcp_pm_family().id;
    let (token, evs) = userspace_connection();
    let sub = evs
        .iter()
        .find(|e| e.kind == EventType::SubEstablished)
        .expect("the created subflow");
    let local = sub.local().unwrap();
    let remote: SocketAddr = "198.18.0.254:4434".parse().unwrap();
    assert_eq!(sub.remote(), Some(remote));
    let create = mptcp_pm::Request {
        cmd: Command::SubflowCreate,
        token: Some(token),
        addr: Some(Address {
            id: Some(7),
            flags: Some(EndpointFlags::NONE),
            if_idx: Some(3),
            ..Address::socket(SocketAddr::new(local.ip(), 0))
        }),
        remote: Some(Address::socket(remote)),
    };
    let set_backup = mptcp_pm::Request {
        cmd: Command::SetFlags,
        token: Some(token),
        addr: Some(Address {
            flags: Some(EndpointFlags::BACKUP),
            ..Address::socket(local)
        }),
        remote: Some(Address::socket(remote)),
    };
    let destroy = mptcp_pm::Request {
        cmd: Command::SubflowDestroy,
        token: Some(token),
        addr: Some(Address::socket(local)),
        remote: Some(Address::socket(remote)),
    };
    for (name, seq, want) in [
        ("pm_subflow_create", 10, create),
        ("pm_set_flags_token", 11, set_backup),
        ("pm_subflow_destroy", 12, destroy),
    ] {
        let c = capture(name);
        assert_eq!(sent_request(&c).2, want, "{name}");
        assert_eq!(
            want.emit(fid, NLM_F_REQUEST | NLM_F_ACK, seq),
            c.sent.clone().unwrap(),
            "{name}"
        );
        assert_eq!(answer(&c).errno, 0, "{name}: acknowledged");
    }
}

#[test]
fn userspace_pm_events_follow_the_connection() {
    let (token, evs) = userspace_connection();
    let kinds: Vec<EventType> = evs.iter().map(|e| e.kind).collect();
    use EventType::*;
    assert_eq!(
        kinds,
        [Created, Established, SubEstablished, SubClosed, Closed]
    );
    assert!(evs.iter().all(|e| e.token == Some(token) && !e.server_side));
    let first = &evs[0];
    assert_eq!(first.saddr, Some("198.18.0.1".parse().unwrap()));
    assert_eq!(first.remote(), Some("198.18.0.254:4434".parse().unwrap()));
    let sub = &evs[2];
    assert_eq!((sub.loc_id, sub.rem_id), (Some(7), Some(0)));
    assert_eq!((sub.backup, sub.if_idx), (Some(false), Some(3)));
    assert_eq!(sub.saddr, Some("198.18.1.1".parse().unwrap()));
    assert_eq!(evs[3].local(), sub.local(), "the same subflow closed");
    assert_eq!(evs[4].saddr, None, "CLOSED carries only the token");
}

#[test]
fn kernel_pm_events_include_listeners_and_the_endpoint_subflow() {
    let evs = events("events_kernel_pm");
    use EventType::*;
    let kinds: Vec<EventType> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            ListenerCreated,
            Created,
            Established,
            SubEstablished,
            SubClosed,
            Closed
        ]
    );
    assert_eq!(evs[0].local(), None, "a listener has no remote");
    assert_eq!(evs[0].saddr, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(evs[0].sport, Some(5000));
    let token = evs[1].token;
    assert!(token.is_some());
    let sub = &evs[3];
    assert_eq!(sub.token, token);
    assert_eq!(sub.loc_id, Some(201), "from endpoint 201");
    assert_eq!(sub.saddr, Some("198.18.1.1".parse().unwrap()));
    assert_eq!(sub.dport, Some(4433));
    assert_eq!(sub.if_idx, Some(3));
}

#[test]
fn sock_diag_reads_a_subflows_backup_flag() {
    let c = capture("sock_diag_subflow_backup");
    let sent = c.sent.clone().unwrap();
    let m = Messages::new(&sent).next().unwrap();
    let req = sock_diag::Request::parse(m.payload).unwrap();
    let want =
        sock_diag::Request::subflow(req.id.src, "198.18.0.254:4433".parse().unwrap(), 3).unwrap();
    assert_eq!(req, want);
    assert_eq!(want.emit(7), sent);
    let replies = messages(&c.received);
    assert_eq!(replies.len(), 1);
    let r = replies[0];
    assert_eq!(
        (r.header.kind, r.header.seq),
        (MessageType::Other(sock_diag::SOCK_DIAG_BY_FAMILY), 7)
    );
    let s = sock_diag::Socket::parse(r.payload).unwrap();
    assert_eq!((s.id.src, s.id.dst), (want.id.src, want.id.dst));
    assert_eq!((s.state, s.id.ifindex), (1, 3), "established, on dummy1");
    let ulp = s.ulp().expect("the ULP nest");
    assert_eq!(ulp.name, Some(UlpName::Mptcp));
    let info = ulp.mptcp.expect("MPTCP subflow info");
    let flags = info.flags.unwrap();
    assert!(
        flags.backup_local(),
        "{flags:?}: SET_FLAGS backup sent MP_PRIO"
    );
    assert!(!flags.backup_remote());
    assert_ne!(flags.0 & SubflowFlags::JOIN_LOC, 0, "a joined subflow");
    assert_eq!((info.id_loc, info.id_rem), (Some(201), Some(0)));
}

#[test]
fn truncated_captures_never_panic() {
    for name in [
        "ctrl_getfamily_mptcp_pm",
        "events_kernel_pm",
        "pm_get_addr_dump",
        "sock_diag_subflow_backup",
    ] {
        for d in capture(name).received {
            for n in 0..d.len() {
                for m in Messages::new(&d[..n]) {
                    let _ = m.error();
                    if let Some(g) = GenlMessage::parse(&m) {
                        let _ = Event::parse(g.header.cmd, g.attrs);
                        let _ = mptcp_pm::Request::parse(g.header.cmd, g.attrs);
                        let _ = Family::parse(g.attrs);
                    }
                    if let Some(s) = sock_diag::Socket::parse(m.payload) {
                        let _ = s.ulp();
                    }
                }
            }
        }
    }
}

#[test]
fn iproute2s_endpoint_requests_read_as_what_it_was_asked() {
    let fid = mptcp_pm_family().id;
    let add = capture("ip_endpoint_add");
    let (m, _, r) = sent_request(&add);
    assert_eq!(m.header.kind, MessageType::Other(fid));
    // iproute2 orders the nest differently (id, flags, dev, family, address): the same values.
    assert_eq!(
        r,
        mptcp_pm::Request {
            addr: Some(Address {
                addr: Some("198.18.0.1".parse().unwrap()),
                id: Some(9),
                port: None,
                flags: Some(EndpointFlags::SUBFLOW | EndpointFlags::BACKUP),
                if_idx: Some(2),
            }),
            ..mptcp_pm::Request::new(Command::AddAddr)
        }
    );
    assert_eq!(answer(&add).errno, 0);
    let id_only = Some(Address {
        id: Some(9),
        ..Address::default()
    });
    for (name, cmd) in [
        // `nobackup` goes out as an id alone: no flags at all.
        ("ip_endpoint_change", Command::SetFlags),
        ("ip_endpoint_delete", Command::DelAddr),
    ] {
        let c = capture(name);
        let (_, _, r) = sent_request(&c);
        assert_eq!((r.cmd, r.addr, r.token), (cmd, id_only, None), "{name}");
        assert_eq!(answer(&c).errno, 0, "{name}");
    }
    // The dump request is roam's, byte for byte (with iproute2's sequence number).
    let show = capture("ip_endpoint_show");
    let (m, _, _) = sent_request(&show);
    assert_eq!(
        mptcp_pm::Request::new(Command::GetAddr).emit(
            fid,
            NLM_F_REQUEST | NLM_F_DUMP,
            m.header.seq
        ),
        show.sent.clone().unwrap()
    );
    let ids: Vec<(Option<u8>, Option<i32>)> = messages(&show.received)
        .iter()
        .filter_map(GenlMessage::parse)
        .map(|g| {
            let a = mptcp_pm::Request::parse(g.header.cmd, g.attrs)
                .addr
                .unwrap();
            (a.id, a.if_idx)
        })
        .collect();
    assert_eq!(ids, [(Some(9), Some(2)), (Some(202), None)]);
}
