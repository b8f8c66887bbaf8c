//! Names resolved on the link that will carry them.
//!
//! A phone's links each have their own nameservers (DHCP on WiFi, the carrier's on cellular), and
//! a name can resolve differently, or only, on one of them. So a session asks each permitted
//! link's nameservers for the name's A and AAAA records over a UDP socket bound to that link
//! (the same binding, and the same app binder, as the session's own sockets), and the addresses
//! a link returned are the ones tried on that link.
//!
//! Which nameservers a link uses, first match wins:
//! 1. the ones given for it with [`crate::SessionBuilder::nameservers`];
//! 2. `/etc/resolv.conf`'s `nameserver` lines, asked over the link;
//! 3. the system resolver (`getaddrinfo`), unpinned, whose answer is tried on the link, when
//!    resolv.conf lists no nameserver or only loopback ones: a local stub (systemd-resolved's
//!    `127.0.0.53`, say) routes queries per link itself and cannot be reached over a link.
//!
//! The links are asked at once; the connect goes on when all answered or the DNS timeout passed.
//! A link whose nameservers did not answer contributes no candidates; the name fails with
//! [`Error::Resolve`] only when no link found an address, and the error says what each link's
//! nameservers said.
//!
//! The DNS client is the RFC 1035 subset this needs: one question per query, recursion desired,
//! over UDP only (A and AAAA answers fit in 512 bytes; a truncated answer is an error for that
//! nameserver and the next one is asked). Encoding and parsing are pure functions, tested on
//! bytes; the I/O is [`resolve`].

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::task::JoinSet;

use super::socket::{SocketBinder, bind_to_path};
use crate::decision::Snapshot;
use crate::error::{Error, Result};
use crate::vocab::LocalPath;

/// Where nameservers listen.
pub(crate) const DNS_PORT: u16 = 53;
/// The system's resolver configuration.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Replies read per nameserver before giving up on it (stray or forged datagrams).
const MAX_REPLIES: usize = 16;

/// How a session finds nameservers: set through the builder.
#[derive(Debug, Clone)]
pub(crate) struct DnsConfig {
    /// Nameservers per interface name, as the app gave them.
    pub(crate) per_link: HashMap<String, Vec<IpAddr>>,
    /// How long one link's resolution may take, every nameserver included.
    pub(crate) timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            per_link: HashMap::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The peer's addresses as each link resolved them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    per_link: HashMap<String, Vec<SocketAddr>>,
}

impl Resolved {
    /// The same addresses on every link (an IP literal).
    pub(crate) fn everywhere(peers: Vec<SocketAddr>, snap: &Snapshot) -> Resolved {
        Resolved {
            per_link: snap
                .decision
                .paths
                .iter()
                .map(|p| (p.interface.clone(), peers.clone()))
                .collect(),
        }
    }

    /// Records what `interface` resolved.
    pub(crate) fn insert(&mut self, interface: String, addrs: Vec<SocketAddr>) {
        self.per_link.insert(interface, addrs);
    }

    /// The addresses to try on `interface` (none when it did not resolve the name).
    pub(crate) fn on(&self, interface: &str) -> &[SocketAddr] {
        self.per_link.get(interface).map_or(&[], Vec::as_slice)
    }
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut links: Vec<_> = self.per_link.iter().collect();
        links.sort();
        for (i, (link, addrs)) in links.into_iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{link}: {addrs:?}")?;
        }
        Ok(())
    }
}

/// Resolves `host` on every interface of the decision (see the module's documentation).
pub(crate) async fn resolve(
    cfg: &DnsConfig,
    snap: &Snapshot,
    host: &str,
    port: u16,
    binder: Option<&SocketBinder>,
) -> Result<Resolved> {
    let system_servers = match std::fs::read_to_string(Path::new(RESOLV_CONF)) {
        Ok(text) => parse_resolv_conf(&text)
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "no {RESOLV_CONF}; the system resolver answers");
            Vec::new()
        }
    };
    let (v4, v6) = (snap.local_paths(false), snap.local_paths(true));
    let mut set = JoinSet::new();
    let mut system_links = Vec::new();
    for p in &snap.decision.paths {
        let servers = match cfg.per_link.get(&p.interface) {
            Some(s) => s.clone(),
            None if !system_servers.is_empty() => system_servers.clone(),
            None => {
                system_links.push(p.interface.clone());
                continue;
            }
        };
        let paths: Vec<LocalPath> = v4
            .iter()
            .chain(&v6)
            .filter(|l| l.interface == p.interface)
            .cloned()
            .collect();
        let (host, binder, timeout) = (host.to_owned(), binder.cloned(), cfg.timeout);
        let iface = p.interface.clone();
        set.spawn(async move {
            let r = resolve_on_link(&paths, &servers, &host, timeout, binder.as_ref()).await;
            (iface, r)
        });
    }

    let mut out = Resolved::default();
    let mut said = Vec::new();
    if !system_links.is_empty() {
        match system(host, port).await {
            Ok(addrs) => {
                for l in system_links {
                    out.insert(l, addrs.clone());
                }
            }
            Err(e) => said.push(format!("the system resolver: {e}")),
        }
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((iface, Ok(ips))) => {
                tracing::debug!(interface = %iface, ?ips, "resolved on the link");
                let addrs = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                out.insert(iface, addrs);
            }
            Ok((iface, Err(why))) => {
                tracing::info!(interface = %iface, %why, "the link did not resolve the name");
                said.push(format!("over {iface}: {why}"));
            }
            Err(join) => said.push(format!("a resolver task failed: {join}")),
        }
    }
    if out.per_link.values().all(Vec::is_empty) {
        said.sort();
        return Err(Error::Resolve {
            host: host.to_owned(),
            detail: if said.is_empty() {
                "no permitted interface to ask on".into()
            } else {
                said.join("; ")
            },
        });
    }
    Ok(out)
}

/// The system resolver (`getaddrinfo`), not pinned to any link.
pub(crate) async fn system(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let err = |detail: String| Error::Resolve {
        host: host.to_owned(),
        detail,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(err("no A or AAAA record".into()));
    }
    Ok(addrs)
}

/// Asks `servers` in turn, over the link's `paths` (one per family it has), for A and AAAA;
/// the first nameserver that answers both questions decides. The error says what each said.
async fn resolve_on_link(
    paths: &[LocalPath],
    servers: &[IpAddr],
    host: &str,
    timeout: Duration,
    binder: Option<&SocketBinder>,
) -> std::result::Result<Vec<IpAddr>, String> {
    let usable: Vec<(IpAddr, &LocalPath)> = servers
        .iter()
        .filter_map(|s| Some((*s, paths.iter().find(|p| p.local.is_ipv6() == s.is_ipv6())?)))
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "no nameserver of a family the link has an address of (nameservers {servers:?})"
        ));
    }
    let each = timeout / usable.len() as u32;
    let mut said = Vec::new();
    for (server, path) in usable {
        let peer = SocketAddr::new(server, DNS_PORT);
        match tokio::time::timeout(each, ask(path, peer, host, binder)).await {
            Ok(Ok(Lookup::Found(ips))) => return Ok(ips),
            // An authoritative "no such name": asking another nameserver would not change it.
            Ok(Ok(Lookup::NoSuchName)) => {
                return Err(format!("{server} says the name does not exist (NXDOMAIN)"));
            }
            Ok(Ok(Lookup::NoAddress)) => {
                return Err(format!("{server} knows the name but it has no A or AAAA"));
            }
            Ok(Err(e)) => said.push(format!("{server}: {e}")),
            Err(_) => said.push(format!("{server}: no answer within {each:?}")),
        }
    }
    Err(said.join(", "))
}

/// What a nameserver said about both families.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found(Vec<IpAddr>),
    NoSuchName,
    NoAddress,
}

/// Sends the A and AAAA questions to `peer` from a socket bound to `path` and waits for both
/// answers; AAAA first in the result (RFC 8305 prefers IPv6, the race interleaves anyway).
async fn ask(
    path: &LocalPath,
    peer: SocketAddr,
    host: &str,
    binder: Option<&SocketBinder>,
) -> std::result::Result<Lookup, String> {
    let socket = udp_socket(path, peer, binder)
        .map_err(|e| format!("could not open a socket on {path}: {e}"))?;
    let id = random_id();
    let questions = [(id, QType::Aaaa), (id.wrapping_add(1), QType::A)];
    for (id, qtype) in questions {
        let q = encode_query(id, host, qtype).map_err(|e| e.to_string())?;
        socket
            .send(&q)
            .await
            .map_err(|e| format!("sending the query over {path}: {e}"))?;
    }
    let mut answers: [Option<Answer>; 2] = [None, None];
    let mut buf = [0u8; 1500];
    for _ in 0..MAX_REPLIES {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("reading the answer over {path}: {e}"))?;
        for (slot, (id, qtype)) in answers.iter_mut().zip(questions) {
            match parse_answer(&buf[..n], id, host, qtype) {
                Ok(a) => *slot = Some(a),
                // A reply to the other question, or a stray datagram.
                Err(ParseError::NotOurs) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if let [Some(aaaa), Some(a)] = &answers {
            return Ok(merge(aaaa, a));
        }
    }
    Err(format!("{MAX_REPLIES} datagrams but no answer"))
}

/// Both families' answers as one outcome: NXDOMAIN from either is the name's (the other can
/// only agree), addresses from either are found.
fn merge(aaaa: &Answer, a: &Answer) -> Lookup {
    match (aaaa, a) {
        (Answer::NxDomain, _) | (_, Answer::NxDomain) => Lookup::NoSuchName,
        (Answer::Addrs(x), Answer::Addrs(y)) if x.is_empty() && y.is_empty() => Lookup::NoAddress,
        (Answer::Addrs(x), Answer::Addrs(y)) => Lookup::Found(x.iter().chain(y).copied().collect()),
    }
}

fn udp_socket(
    path: &LocalPath,
    peer: SocketAddr,
    binder: Option<&SocketBinder>,
) -> std::io::Result<tokio::net::UdpSocket> {
    let domain = if peer.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if peer.is_ipv6() {
        s.set_only_v6(true)?;
    }
    bind_to_path(&s, path, binder)?;
    s.set_nonblocking(true)?;
    // Connected: the kernel drops datagrams from anyone but the nameserver.
    s.connect(&peer.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A query id nobody on the path can guess cheaply (the source port is random too).
fn random_id() -> u16 {
    let h = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    h as u16
}

/// The record types asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QType {
    /// IPv4 address (1).
    A,
    /// IPv6 address (28).
    Aaaa,
}

impl QType {
    fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Aaaa => 28,
        }
    }
}

const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const RCODE_NXDOMAIN: u16 = 3;

/// Why a name cannot be put in a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadName(&'static str);

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a DNS name: {}", self.0)
    }
}

/// A standard query for `name`'s `qtype` records with recursion desired (RFC 1035 4.1).
pub(crate) fn encode_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, BadName> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(BadName("empty or longer than 253 characters"));
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, no records
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(BadName("a label is empty or longer than 63 characters"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// What a reply says about the question.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The addresses of the asked type in the answer section (none: the name exists without
    /// such records, NODATA).
    Addrs(Vec<IpAddr>),
    /// The name does not exist (RCODE 3).
    NxDomain,
}

/// Why a reply was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not a reply to this query (another id, name or type): wait for the next one.
    NotOurs,
    /// The nameserver failed (SERVFAIL, REFUSED, ...).
    Rcode(u16),
    /// The reply was truncated (TC): it needs TCP, which this client does not speak.
    Truncated,
    /// The bytes are not a valid reply.
    Malformed(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotOurs => f.write_str("a reply to another query"),
            ParseError::Rcode(2) => f.write_str("the nameserver failed (SERVFAIL)"),
            ParseError::Rcode(5) => f.write_str("the nameserver refused the query (REFUSED)"),
            ParseError::Rcode(c) => write!(f, "the nameserver answered with error code {c}"),
            ParseError::Truncated => f.write_str("the answer was truncated (needs DNS over TCP)"),
            ParseError::Malformed(why) => write!(f, "malformed answer: {why}"),
        }
    }
}

/// Reads a reply to the query `encode_query(id, name, qtype)` (RFC 1035 4.1, name
/// compression 4.1.4).
pub(crate) fn parse_answer(
    msg: &[u8],
    id: u16,
    name: &str,
    qtype: QType,
) -> Result<Answer, ParseError> {
    let mut r = Reader { msg, pos: 0 };
    let got_id = r.u16()?;
    let flags = r.u16()?;
    let (qd, an) = (r.u16()?, r.u16()?);
    r.u16()?; // authority
    r.u16()?; // additional
    if got_id != id || flags & FLAG_QR == 0 || qd != 1 {
        return Err(ParseError::NotOurs);
    }
    let qname = r.name()?;
    let (t, class) = (r.u16()?, r.u16()?);
    let name = name.strip_suffix('.').unwrap_or(name);
    if !qname.eq_ignore_ascii_case(name) || t != qtype.code() || class != CLASS_IN {
        return Err(ParseError::NotOurs);
    }
    if flags & FLAG_TC != 0 {
        return Err(ParseError::Truncated);
    }
    match flags & 0x000f {
        0 => {}
        RCODE_NXDOMAIN => return Ok(Answer::NxDomain),
        rcode => return Err(ParseError::Rcode(rcode)),
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        r.skip_name()?;
        let (t, class) = (r.u16()?, r.u16()?);
        r.take(4)?; // TTL
        let len = r.u16()? as usize;
        let data = r.take(len)?;
        // A CNAME chain comes with the final records; only the asked type's are addresses.
        if class != CLASS_IN || t != qtype.code() {
            continue;
        }
        addrs.push(match (qtype, data.len()) {
            (QType::A, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (QType::Aaaa, 16) => {
                let b: [u8; 16] = data.try_into().map_err(|_| bad("AAAA length"))?;
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err(bad("an address record of the wrong length")),
        });
    }
    Ok(Answer::Addrs(addrs))
}

fn bad(why: &'static str) -> ParseError {
    ParseError::Malformed(why)
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.msg.len());
        let end = end.ok_or(bad("shorter than its fields say"))?;
        let s = &self.msg[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a possibly compressed name, dotted, without the root's dot.
    fn name(&mut self) -> Result<String, ParseError> {
        let mut out = String::new();
        let mut at = self.pos;
        let mut resume = None;
        // Each pointer must go backwards, so there are at most as many jumps as bytes.
        for _ in 0..self.msg.len() {
            let len = *self.msg.get(at).ok_or(bad("a name runs past the end"))? as usize;
            match len & 0xc0 {
                0 if len == 0 => {
                    self.pos = resume.unwrap_or(at + 1);
                    return Ok(out);
                }
                0 => {
                    let label = self
                        .msg
                        .get(at + 1..at + 1 + len)
                        .ok_or(bad("a label runs past the end"))?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&String::from_utf8_lossy(label));
                    if out.len() > 255 {
                        return Err(bad("a name longer than 255 bytes"));
                    }
                    at += 1 + len;
                }
                0xc0 => {
                    let lo = *self.msg.get(at + 1).ok_or(bad("a cut pointer"))? as usize;
                    let target = (len & 0x3f) << 8 | lo;
                    if target >= at {
                        return Err(bad("a compression pointer that does not point back"));
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                _ => return Err(bad("an unknown label type")),
            }
        }
        Err(bad("a compression loop"))
    }

    fn skip_name(&mut self) -> Result<(), ParseError> {
        self.name().map(drop)
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order (resolv.conf(5); a zone index
/// like `fe80::1%eth0` is not supported and skipped).
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()?.parse().ok())?
        })
        .collect()
}

/// The name the DNS fuzz target's replies answer (its seeds are dnsmasq's answers for it).
const FUZZ_NAME: &str = "api.roam.test";

/// The fuzz target's body (sdk/fuzz, `dns_answer`) and its corpus replay: `data` as a UDP
/// reply to the client's query for `api.roam.test` (its id taken from the reply, so the
/// fuzzer reaches past the id check), read for both address types. Never panics on any input;
/// addresses come back only of the asked family.
pub(crate) fn fuzz(data: &[u8]) {
    let id = data
        .first_chunk::<2>()
        .map_or(0, |b| u16::from_be_bytes(*b));
    for qtype in [QType::A, QType::Aaaa] {
        if let Ok(Answer::Addrs(addrs)) = parse_answer(data, id, FUZZ_NAME, qtype) {
            assert!(
                addrs.iter().all(|a| a.is_ipv4() == (qtype == QType::A)),
                "{qtype:?} answer with {addrs:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `encode_query(0x1234, "api.roam.test", A)` as dnsmasq sends it: the
    /// question, then a CNAME to `edge.roam.test` and its A record, both owners compressed.
    fn reply(flags: u16, answers: &[&[u8]]) -> Vec<u8> {
        let mut m = encode_query(0x1234, "api.roam.test", QType::A).unwrap();
        m[2..4].copy_from_slice(&(flags | FLAG_QR).to_be_bytes());
        m[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for a in answers {
            m.extend_from_slice(a);
        }
        m
    }

    const CNAME: &[u8] = &[
        0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 7, // owner -> the question's name; CNAME IN
        4, b'e', b'd', b'g', b'e', 0xc0, 16, // "edge" + pointer to "roam.test"
    ];
    const A: &[u8] = &[
        0xc0, 43, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 19, 0, 1, // owner -> "edge.roam.test"
    ];

    #[test]
    fn a_query_is_rfc_1035_bytes() {
        let q = encode_query(0xbeef, "api.roam.test.", QType::Aaaa).unwrap();
        let want: &[u8] = &[
            0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'p', b'i', 4, b'r', b'o', b'a',
            b'm', 4, b't', b'e', b's', b't', 0, 0, 28, 0, 1,
        ];
        assert_eq!(q, want);
        assert!(encode_query(1, "", QType::A).is_err());
        assert!(encode_query(1, "a..b", QType::A).is_err());
        assert!(encode_query(1, &"x".repeat(64), QType::A).is_err());
    }

    #[test]
    fn answers_follow_compression_and_skip_the_cname() {
        let m = reply(FLAG_RD | 0x0080, &[CNAME, A]);
        assert_eq!(
            parse_answer(&m, 0x1234, "API.roam.test", QType::A),
            Ok(Answer::Addrs(vec!["198.19.0.1".parse().unwrap()]))
        );
    }

    #[test]
    fn nxdomain_nodata_and_failures_are_told_apart() {
        let nx = reply(RCODE_NXDOMAIN, &[]);
        assert_eq!(
            parse_answer(&nx, 0x1234, "api.roam.test", QType::A),
            Ok(Answer::NxDomain)
        );
        let nodata = reply(0, &[]);
        assert_eq!(
            parse_answer(&nodata, 0x1234, "api.roam.test", QType::A),
            Ok(Answer::Addrs(vec![]))
        );
        let servfail = reply(2, &[]);
        assert_eq!(
            parse_answer(&servfail, 0x1234, "api.roam.test", QType::A),
            Err(ParseError::Rcode(2))
        );
        let tc = reply(FLAG_TC, &[]);
        assert_eq!(
            parse_answer(&tc, 0x1234, "api.roam.test", QType::A),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            merge(&Answer::NxDomain, &Answer::NxDomain),
            Lookup::NoSuchName
        );
        assert_eq!(
            merge(&Answer::Addrs(vec![]), &Answer::Addrs(vec![])),
            Lookup::NoAddress
        );
    }

    #[test]
    fn other_replies_are_not_ours() {
        let m = reply(0, &[A]);
        for (id, name, t) in [
            (0x1235, "api.roam.test", QType::A),
            (0x1234, "www.roam.test", QType::A),
            (0x1234, "api.roam.test", QType::Aaaa),
        ] {
            assert_eq!(parse_answer(&m, id, name, t), Err(ParseError::NotOurs));
        }
        // The query itself (QR clear) is not an answer.
        let q = encode_query(0x1234, "api.roam.test", QType::A).unwrap();
        assert_eq!(
            parse_answer(&q, 0x1234, "api.roam.test", QType::A),
            Err(ParseError::NotOurs)
        );
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let good = reply(0, &[CNAME, A]);
        for cut in 0..good.len() {
            let _ = parse_answer(&good[..cut], 0x1234, "api.roam.test", QType::A);
        }
        // A pointer to itself.
        let looped = reply(0, &[&[0xc0, 31, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]]);
        assert!(matches!(
            parse_answer(&looped, 0x1234, "api.roam.test", QType::A),
            Err(ParseError::Malformed(_))
        ));
        let short_a = reply(0, &[&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3]]);
        assert!(matches!(
            parse_answer(&short_a, 0x1234, "api.roam.test", QType::A),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 198.18.0.1\n\
                    nameserver  2001:db8::53 \nnameserver fe80::1%eth0\noptions ndots:1\n\
                    nameserver\n";
        assert_eq!(
            parse_resolv_conf(text),
            [
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
    }
}
