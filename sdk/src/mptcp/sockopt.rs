//! The kernel's MPTCP socket options (`SOL_MPTCP`, `include/uapi/linux/mptcp.h`): the uapi
//! structures with their sizes, the `getsockopt` calls, and parsers that read the kernel's
//! answer from bytes.
//!
//! The structures grow between kernel versions; the kernel copies `min(user, kernel)` bytes
//! and reports both sizes. So every answer is parsed from a byte buffer by offset, and a field
//! past what the kernel filled reads as absent, never as garbage. Layouts (x86-64 and every
//! Linux ABI: natural alignment, `sockaddr_storage` is 128 bytes, 8-aligned):
//!
//! | struct | size | fields used (offset) |
//! | --- | --- | --- |
//! | `mptcp_info` | 96 | subflows (0), flags (8), token (12), bytes_sent (56), bytes_received (64), subflows_total (80) |
//! | `mptcp_subflow_data` | 16 | size_subflow_data (0), num_subflows (4), size_kernel (8), size_user (12) |
//! | `mptcp_subflow_addrs` | 256 | local `sockaddr_storage` (0), remote (128) |
//! | `mptcp_subflow_info` | 264 | id (0), addrs (8) |
//! | `mptcp_full_info` | 136 | size_tcpinfo_kernel (0), size_tcpinfo_user (4), size_sfinfo_kernel (8), size_sfinfo_user (12), num_subflows (16), size_arrays_user (20), subflow_info ptr (24), tcp_info ptr (32), mptcp_info (40) |
//! | `tcp_info` | 232 read | last_data_recv ms (52), last_ack_recv ms (56), rtt µs (68), bytes_acked (120), bytes_received (128), bytes_sent (200) |

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SOL_MPTCP` from `linux/socket.h`.
pub const SOL_MPTCP: libc::c_int = 284;
/// `MPTCP_INFO`: the connection-level `struct mptcp_info`.
pub const MPTCP_INFO: libc::c_int = 1;
/// `MPTCP_TCPINFO`: a `struct tcp_info` per subflow.
pub const MPTCP_TCPINFO: libc::c_int = 2;
/// `MPTCP_SUBFLOW_ADDRS`: a `struct mptcp_subflow_addrs` per subflow.
pub const MPTCP_SUBFLOW_ADDRS: libc::c_int = 3;
/// `MPTCP_FULL_INFO` (Linux 6.5+): everything at once, with subflow ids.
pub const MPTCP_FULL_INFO: libc::c_int = 4;

/// `MPTCP_INFO_FLAG_FALLBACK`: the connection fell back to plain TCP.
pub const MPTCP_INFO_FLAG_FALLBACK: u32 = 1 << 0;
/// `MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED`: the peer's key arrived (MPTCP is in use).
pub const MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED: u32 = 1 << 1;

/// `sizeof(struct mptcp_info)` on Linux 6.10+.
pub const MPTCP_INFO_SIZE: usize = 96;
/// `sizeof(struct mptcp_subflow_data)`.
pub const SUBFLOW_DATA_SIZE: usize = 16;
/// `sizeof(struct mptcp_subflow_addrs)`: two `sockaddr_storage`.
pub const SUBFLOW_ADDRS_SIZE: usize = 256;
/// `sizeof(struct mptcp_subflow_info)`: `__u32 id`, padding, addrs.
pub const SUBFLOW_INFO_SIZE: usize = 8 + SUBFLOW_ADDRS_SIZE;
/// `sizeof(struct mptcp_full_info)`.
pub const FULL_INFO_SIZE: usize = 40 + MPTCP_INFO_SIZE;
/// How much of `struct tcp_info` is asked for (up to `tcpi_rcv_wnd`, Linux 5.19+).
pub const TCP_INFO_SIZE: usize = 232;
/// At most this many subflows are read (the kernel caps subflows at 8 per connection).
pub const MAX_SUBFLOWS: usize = 16;

/// The connection-level view (`struct mptcp_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MptcpInfo {
    /// Additional subflows (not counting the initial one).
    pub subflows: u8,
    /// `mptcpi_flags` (fallback, remote key received).
    pub flags: u32,
    /// The connection token: how the userspace path manager names this connection.
    pub token: u32,
    /// Bytes sent at the MPTCP level, when the kernel reports it (6.7+).
    pub bytes_sent: Option<u64>,
    /// Bytes received at the MPTCP level, when the kernel reports it (6.7+).
    pub bytes_received: Option<u64>,
    /// Subflows in all, the initial one included, when the kernel reports it (6.10+).
    pub subflows_total: Option<u8>,
}

impl MptcpInfo {
    /// Whether the kernel says the connection fell back to plain TCP.
    pub fn is_fallback(&self) -> bool {
        self.flags & MPTCP_INFO_FLAG_FALLBACK != 0
    }
}

/// What `struct tcp_info` says of one subflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_state` (1 = established).
    pub state: u8,
    /// Smoothed RTT in microseconds.
    pub rtt_us: u32,
    /// Bytes the peer acknowledged on this subflow.
    pub bytes_acked: Option<u64>,
    /// Bytes received on this subflow.
    pub bytes_received: Option<u64>,
    /// Bytes sent on this subflow, retransmissions included (5.5+).
    pub bytes_sent: Option<u64>,
    /// `tcpi_probes`: zero-window probes sent and not answered yet.
    pub probes: u8,
    /// `tcpi_unacked`: segments sent and not acknowledged yet.
    pub unacked: u32,
    /// `tcpi_last_ack_recv`: milliseconds since the last ACK arrived, by the kernel's clock (so
    /// a reader sampling now and then still knows when the acknowledgements stopped).
    pub last_ack_recv_ms: u32,
    /// `tcpi_last_data_recv`: milliseconds since the last data segment arrived, by the
    /// kernel's clock (a receiver's view of when the peer's data stopped).
    pub last_data_recv_ms: u32,
    /// `tcpi_notsent_bytes`: bytes written and not sent yet (4.6+).
    pub notsent_bytes: Option<u32>,
    /// `tcpi_snd_wnd`: the window the peer advertised (5.19+; 0: its app is not reading).
    pub snd_wnd: Option<u32>,
}

/// One subflow as `MPTCP_FULL_INFO` (or the older options) describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSubflow {
    /// The kernel's subflow id within the connection (1 for the initial subflow); `None`
    /// from kernels without `MPTCP_FULL_INFO`.
    pub id: Option<u32>,
    /// Local address.
    pub local: Option<SocketAddr>,
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// TCP-level figures.
    pub tcp: Option<TcpInfo>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Parses the first `len` bytes the kernel filled of a `struct mptcp_info`.
pub fn parse_mptcp_info(b: &[u8]) -> Option<MptcpInfo> {
    // Everything up to the token is in every kernel that has MPTCP_INFO (5.16+).
    Some(MptcpInfo {
        subflows: *b.first()?,
        flags: u32_at(b, 8)?,
        token: u32_at(b, 12)?,
        bytes_sent: u64_at(b, 56),
        bytes_received: u64_at(b, 64),
        subflows_total: b.get(80).copied().filter(|_| b.len() >= 84),
    })
}

/// Parses a `struct tcp_info` the kernel filled `b.len()` bytes of.
pub fn parse_tcp_info(b: &[u8]) -> Option<TcpInfo> {
    Some(TcpInfo {
        state: *b.first()?,
        rtt_us: u32_at(b, 68)?,
        bytes_acked: u64_at(b, 120),
        bytes_received: u64_at(b, 128),
        bytes_sent: u64_at(b, 200),
        probes: *b.get(3)?,
        unacked: u32_at(b, 24)?,
        last_ack_recv_ms: u32_at(b, 56)?,
        last_data_recv_ms: u32_at(b, 52)?,
        notsent_bytes: u32_at(b, 144),
        snd_wnd: u32_at(b, 228),
    })
}

/// Parses a `sockaddr_storage` (AF_INET or AF_INET6); other families are `None`.
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    // sin_port / sin6_port are in network order in both.
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let v6 = Ipv6Addr::from(a);
            // A v4-mapped address is how a dual-stack socket shows an IPv4 peer.
            let ip = v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6));
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

/// Parses a `struct mptcp_subflow_addrs` (local, remote).
pub fn parse_subflow_addrs(b: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    (
        b.get(..128).and_then(parse_sockaddr),
        b.get(128..256).and_then(parse_sockaddr),
    )
}

/// The header of an `MPTCP_TCPINFO` / `MPTCP_SUBFLOW_ADDRS` answer: how many subflows exist
/// and how many bytes of each element the kernel wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubflowData {
    /// Subflows the connection has (may exceed what the buffer held).
    pub num_subflows: u32,
    /// The kernel's element size.
    pub size_kernel: u32,
    /// The element size asked for.
    pub size_user: u32,
}

/// Parses the elements of an `MPTCP_TCPINFO` / `MPTCP_SUBFLOW_ADDRS` answer of `len` bytes.
/// Elements start after the header, each `size_user` apart, and hold `min(size_user,
/// size_kernel)` meaningful bytes.
pub fn parse_subflow_array(b: &[u8]) -> Option<(SubflowData, Vec<&[u8]>)> {
    let hdr_size = u32_at(b, 0)? as usize;
    let d = SubflowData {
        num_subflows: u32_at(b, 4)?,
        size_kernel: u32_at(b, 8)?,
        size_user: u32_at(b, 12)?,
    };
    let stride = d.size_user as usize;
    let valid = stride.min(d.size_kernel as usize);
    if hdr_size < SUBFLOW_DATA_SIZE || stride == 0 {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..(d.num_subflows as usize).min(MAX_SUBFLOWS) {
        let start = hdr_size + i * stride;
        match b.get(start..start + valid) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    Some((d, out))
}

/// The sizes `MPTCP_FULL_INFO` reports in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullInfoHeader {
    /// The kernel's `struct tcp_info` size.
    pub size_tcpinfo_kernel: u32,
    /// The `tcp_info` element stride asked for.
    pub size_tcpinfo_user: u32,
    /// The kernel's `struct mptcp_subflow_info` size.
    pub size_sfinfo_kernel: u32,
    /// The `mptcp_subflow_info` element stride asked for.
    pub size_sfinfo_user: u32,
    /// Subflows the connection has.
    pub num_subflows: u32,
}

/// Parses an `MPTCP_FULL_INFO` answer: the header `hdr` (with its embedded `mptcp_info`), the
/// subflow-info array and the tcp-info array the kernel wrote through the header's pointers.
pub fn parse_full_info(
    hdr: &[u8],
    sfinfo: &[u8],
    tcpinfo: &[u8],
) -> Option<(MptcpInfo, Vec<RawSubflow>)> {
    let h = FullInfoHeader {
        size_tcpinfo_kernel: u32_at(hdr, 0)?,
        size_tcpinfo_user: u32_at(hdr, 4)?,
        size_sfinfo_kernel: u32_at(hdr, 8)?,
        size_sfinfo_user: u32_at(hdr, 12)?,
        num_subflows: u32_at(hdr, 16)?,
    };
    let info = parse_mptcp_info(hdr.get(40..)?)?;
    let (sf_stride, tcp_stride) = (h.size_sfinfo_user as usize, h.size_tcpinfo_user as usize);
    let sf_valid = sf_stride.min(h.size_sfinfo_kernel as usize);
    let tcp_valid = tcp_stride.min(h.size_tcpinfo_kernel as usize);
    let mut subflows = Vec::new();
    for i in 0..(h.num_subflows as usize).min(MAX_SUBFLOWS) {
        let sf = sfinfo.get(i * sf_stride..i * sf_stride + sf_valid);
        let tcp = tcpinfo.get(i * tcp_stride..i * tcp_stride + tcp_valid);
        let Some(sf) = sf else { break };
        let (local, remote) = sf.get(8..).map(parse_subflow_addrs).unwrap_or((None, None));
        subflows.push(RawSubflow {
            id: u32_at(sf, 0),
            local,
            remote,
            tcp: tcp.and_then(parse_tcp_info),
        });
    }
    Some((info, subflows))
}

/// `getsockopt(fd, level, name, buf, &len)`; returns how many bytes the kernel wrote.
///
/// # Safety
/// Any pointer the option's structure carries inside `buf` (as `MPTCP_FULL_INFO`'s do) must
/// point to memory valid for the writes the kernel makes through it, for the whole call.
unsafe fn getsockopt_raw(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option buffer too large"))?;
    // SAFETY: `buf` is valid for writes of `len` bytes for the whole call and `len` points to
    // a live socklen_t; the kernel writes at most `len` bytes and updates `len`. The fd is
    // borrowed, so it stays open during the call. Embedded pointers: the caller's contract.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(buf.len()))
}

/// Whether an error of a `SOL_MPTCP` option means "this socket is plain TCP": a fallen-back
/// MPTCP socket passes the option to TCP, which does not know the level.
pub fn is_not_mptcp(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
    )
}

/// `MPTCP_INFO`. A socket that fell back to TCP answers with [`is_not_mptcp`] errors.
pub fn mptcp_info(fd: BorrowedFd<'_>) -> io::Result<MptcpInfo> {
    let mut buf = [0u8; MPTCP_INFO_SIZE];
    // SAFETY: struct mptcp_info carries no pointers.
    let n = unsafe { getsockopt_raw(fd, SOL_MPTCP, MPTCP_INFO, &mut buf)? };
    parse_mptcp_info(&buf[..n]).ok_or_else(|| short("MPTCP_INFO", n))
}

fn short(what: &str, n: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the kernel answered {what} with only {n} bytes"),
    )
}

/// A buffer for an `mptcp_subflow_data` header followed by `MAX_SUBFLOWS` elements of `size`.
fn subflow_array_request(size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; SUBFLOW_DATA_SIZE + MAX_SUBFLOWS * size];
    buf[0..4].copy_from_slice(&(SUBFLOW_DATA_SIZE as u32).to_ne_bytes());
    buf[12..16].copy_from_slice(&(size as u32).to_ne_bytes());
    buf
}

/// `MPTCP_FULL_INFO` (6.5+): the connection and every subflow's id, addresses and `tcp_info`.
pub fn full_info(fd: BorrowedFd<'_>) -> io::Result<(MptcpInfo, Vec<RawSubflow>)> {
    let mut sfinfo = vec![0u8; MAX_SUBFLOWS * SUBFLOW_INFO_SIZE];
    let mut tcpinfo = vec![0u8; MAX_SUBFLOWS * TCP_INFO_SIZE];
    let mut hdr = [0u8; FULL_INFO_SIZE];
    hdr[4..8].copy_from_slice(&(TCP_INFO_SIZE as u32).to_ne_bytes());
    hdr[12..16].copy_from_slice(&(SUBFLOW_INFO_SIZE as u32).to_ne_bytes());
    hdr[20..24].copy_from_slice(&(MAX_SUBFLOWS as u32).to_ne_bytes());
    hdr[24..32].copy_from_slice(&(sfinfo.as_mut_ptr() as u64).to_ne_bytes());
    hdr[32..40].copy_from_slice(&(tcpinfo.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: the kernel writes through the two pointers at most `size_arrays_user`
    // (MAX_SUBFLOWS) elements of the strides given; both vectors hold exactly that, are not
    // touched (or moved: a Vec's heap buffer stays put) during the call, and outlive it.
    let n = unsafe { getsockopt_raw(fd, SOL_MPTCP, MPTCP_FULL_INFO, &mut hdr)? };
    if n < 40 {
        return Err(short("MPTCP_FULL_INFO", n));
    }
    parse_full_info(&hdr[..n], &sfinfo, &tcpinfo).ok_or_else(|| short("MPTCP_FULL_INFO", n))
}

/// The older pair `MPTCP_SUBFLOW_ADDRS` + `MPTCP_TCPINFO` (5.16+), for kernels without
/// `MPTCP_FULL_INFO`: no subflow ids, and the two answers are matched by position.
pub fn subflows_legacy(fd: BorrowedFd<'_>) -> io::Result<Vec<RawSubflow>> {
    let mut addrs = subflow_array_request(SUBFLOW_ADDRS_SIZE);
    // SAFETY: mptcp_subflow_data and its elements carry no pointers.
    let n = unsafe { getsockopt_raw(fd, SOL_MPTCP, MPTCP_SUBFLOW_ADDRS, &mut addrs)? };
    let (_, a) = parse_subflow_array(&addrs[..n]).ok_or_else(|| short("MPTCP_SUBFLOW_ADDRS", n))?;
    let mut tcp = subflow_array_request(TCP_INFO_SIZE);
    // SAFETY: as above, no pointers.
    let n = unsafe { getsockopt_raw(fd, SOL_MPTCP, MPTCP_TCPINFO, &mut tcp)? };
    let (_, t) = parse_subflow_array(&tcp[..n]).ok_or_else(|| short("MPTCP_TCPINFO", n))?;
    Ok(a.iter()
        .enumerate()
        .map(|(i, e)| {
            let (local, remote) = parse_subflow_addrs(e);
            RawSubflow {
                id: None,
                local,
                remote,
                tcp: t.get(i).and_then(|b| parse_tcp_info(b)),
            }
        })
        .collect())
}

/// `TCP_INFO` of a plain TCP socket (or a fallen-back MPTCP one).
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    let mut buf = [0u8; TCP_INFO_SIZE];
    // SAFETY: struct tcp_info carries no pointers.
    let n = unsafe { getsockopt_raw(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf)? };
    parse_tcp_info(&buf[..n]).ok_or_else(|| short("TCP_INFO", n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_v4(ip: [u8; 4], port: u16) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn sizes_match_the_uapi_layout() {
        // The offsets in the module table, checked against libc's own definitions where it
        // has them.
        assert_eq!(std::mem::size_of::<libc::sockaddr_storage>(), 128);
        assert_eq!(SUBFLOW_ADDRS_SIZE, 2 * 128);
        assert_eq!(SUBFLOW_INFO_SIZE, 264);
        assert_eq!(FULL_INFO_SIZE, 136);
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_rtt), 68);
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked), 120);
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received),
            128
        );
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_probes), 3);
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_unacked), 24);
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv), 56);
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv),
            52
        );
        assert_eq!(
            std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes),
            144
        );
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_sent), 200);
        assert_eq!(std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd), 228);
        const { assert!(TCP_INFO_SIZE >= 228 + 4, "tcpi_snd_wnd is asked for") };
    }

    #[test]
    fn mptcp_info_parses_old_and_new_kernels() {
        let mut b = [0u8; MPTCP_INFO_SIZE];
        b[0] = 1;
        b[8..12].copy_from_slice(&MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED.to_ne_bytes());
        b[12..16].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
        b[56..64].copy_from_slice(&1000u64.to_ne_bytes());
        b[64..72].copy_from_slice(&2000u64.to_ne_bytes());
        b[80] = 2;
        let i = parse_mptcp_info(&b).unwrap();
        assert_eq!(i.token, 0xdead_beef);
        assert_eq!(i.bytes_sent, Some(1000));
        assert_eq!(i.bytes_received, Some(2000));
        assert_eq!(i.subflows_total, Some(2));
        assert!(!i.is_fallback());
        // A 5.16 kernel fills 43 bytes: the newer counters are absent, not zero.
        let old = parse_mptcp_info(&b[..43]).unwrap();
        assert_eq!(old.token, 0xdead_beef);
        assert_eq!(old.bytes_sent, None);
        assert_eq!(old.subflows_total, None);
        // Too short for the token: no answer rather than a wrong one.
        assert_eq!(parse_mptcp_info(&b[..12]), None);
    }

    #[test]
    fn sockaddrs_parse_both_families_and_refuse_others() {
        let v4 = sockaddr_v4([198, 18, 0, 2], 443);
        assert_eq!(parse_sockaddr(&v4), Some("198.18.0.2:443".parse().unwrap()));
        let mut v6 = [0u8; 128];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&8443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[2001:db8::2]:8443".parse().unwrap())
        );
        let mut mapped = v6;
        mapped[8..24].copy_from_slice(&Ipv4Addr::new(198, 19, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(
            parse_sockaddr(&mapped),
            Some("198.19.0.1:8443".parse().unwrap())
        );
        let mut unix = v4;
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_sockaddr(&unix), None);
        assert_eq!(parse_sockaddr(&v4[..3]), None);
    }

    #[test]
    fn full_info_parses_subflows_and_stops_at_the_buffer() {
        let mut hdr = [0u8; FULL_INFO_SIZE];
        hdr[0..4].copy_from_slice(&(TCP_INFO_SIZE as u32 + 16).to_ne_bytes()); // newer kernel
        hdr[4..8].copy_from_slice(&(TCP_INFO_SIZE as u32).to_ne_bytes());
        hdr[8..12].copy_from_slice(&(SUBFLOW_INFO_SIZE as u32).to_ne_bytes());
        hdr[12..16].copy_from_slice(&(SUBFLOW_INFO_SIZE as u32).to_ne_bytes());
        hdr[16..20].copy_from_slice(&3u32.to_ne_bytes()); // three, but room for two
        hdr[52..56].copy_from_slice(&7u32.to_ne_bytes()); // token
        let mut sf = vec![0u8; 2 * SUBFLOW_INFO_SIZE];
        let mut tcp = vec![0u8; 2 * TCP_INFO_SIZE];
        for (i, (ip, id)) in [([198, 18, 0, 2], 1u32), ([198, 18, 1, 2], 2)]
            .into_iter()
            .enumerate()
        {
            let s = &mut sf[i * SUBFLOW_INFO_SIZE..];
            s[0..4].copy_from_slice(&id.to_ne_bytes());
            s[8..136].copy_from_slice(&sockaddr_v4(ip, 40000));
            s[136..264].copy_from_slice(&sockaddr_v4([198, 19, 0, 1], 4433));
            let t = &mut tcp[i * TCP_INFO_SIZE..];
            t[0] = 1;
            t[68..72].copy_from_slice(&(500 * (i as u32 + 1)).to_ne_bytes());
            t[120..128].copy_from_slice(&4096u64.to_ne_bytes());
        }
        let (info, subs) = parse_full_info(&hdr, &sf, &tcp).unwrap();
        assert_eq!(info.token, 7);
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[1].id, Some(2));
        assert_eq!(subs[1].local, Some("198.18.1.2:40000".parse().unwrap()));
        assert_eq!(subs[1].remote, Some("198.19.0.1:4433".parse().unwrap()));
        assert_eq!(subs[1].tcp.unwrap().rtt_us, 1000);
        assert_eq!(subs[0].tcp.unwrap().bytes_acked, Some(4096));
    }

    #[test]
    fn subflow_arrays_respect_the_smaller_element_size() {
        let mut b = subflow_array_request(TCP_INFO_SIZE);
        b[4..8].copy_from_slice(&2u32.to_ne_bytes());
        b[8..12].copy_from_slice(&104u32.to_ne_bytes()); // an old kernel's tcp_info
        let (d, elems) = parse_subflow_array(&b).unwrap();
        assert_eq!(d.num_subflows, 2);
        assert_eq!(elems.len(), 2);
        assert_eq!(elems[0].len(), 104);
        // rtt is inside 104 bytes, bytes_acked is not.
        let t = parse_tcp_info(elems[0]).unwrap();
        assert_eq!(t.bytes_acked, None);
        // A header claiming a zero stride is refused, not looped on.
        b[12..16].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_subflow_array(&b).is_none());
    }
}
