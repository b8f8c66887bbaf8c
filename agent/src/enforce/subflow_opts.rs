//! TCP options for one MPTCP subflow: Linux has no userspace setter for a single subflow, so
//! roamd loads a BPF sock_ops program (hand-assembled below, loaded with the bpf(2) system
//! call; no libbpf) that, when a TCP socket sends its SYN (`BPF_SOCK_OPS_TCP_CONNECT_CB`), looks
//! the socket up in a hash map by (network namespace, local address, remote address, remote
//! port) and applies the options found there with `bpf_setsockopt`. A socket without an entry
//! is left alone: the lookup misses and the program returns at once.
//!
//! roamd writes the entry just before it asks the userspace path manager for the subflow, and
//! removes it once the kernel answered: the kernel connects the subflow (and so runs the
//! program) inside that request. The program records in the entry which options it applied
//! and the error of any it could not, which roamd reads before removing it.
//!
//! The program is attached to a cgroup v2 with `BPF_LINK_CREATE` (a bpf_link, not
//! `BPF_PROG_ATTACH`): the link is a file descriptor of roamd's, so the program is detached
//! when roamd exits or crashes. A subflow belongs to its MPTCP socket's cgroup, so the cgroup
//! must hold the apps (the cgroup2 mount's root holds every process).
//!
//! Needs CAP_BPF and CAP_NET_ADMIN (or root) and a kernel with BPF syscall and cgroup v2
//! (`bpf_get_netns_cookie` in sock_ops programs: Linux 5.15).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use roam_ipc::proto::TcpOptions;

/// A map key (see [`key`]).
pub type Key = [u8; KEY_SIZE];

/// The map's size: at most this many subflow creations with options under way at once.
pub const MAX_ENTRIES: u32 = 1024;

/// The map key: netns cookie, local address, remote address (16 bytes each, IPv4 in the first
/// four), remote port as the sock_ops context holds it, address family.
const KEY_SIZE: usize = 48;
/// The map value; offsets below.
const VALUE_SIZE: usize = 56;
const V_FLAGS: i16 = 0;
const V_NODELAY: i16 = 4;
const V_KEEPALIVE: i16 = 8;
const V_KEEPIDLE: i16 = 12;
const V_KEEPINTVL: i16 = 16;
const V_KEEPCNT: i16 = 20;
// 24..28: unused.
const V_CC: i16 = 28;
const CC_LEN: i32 = 16;
/// Written by the program: the options it applied, those the kernel refused, the last error.
const V_APPLIED: i16 = 44;
const V_REFUSED: i16 = 48;
const V_ERRNO: i16 = 52;

/// One option the program may set: its bit in `flags`, level, name, value offset and length.
struct Opt {
    bit: u32,
    label: &'static str,
    level: i32,
    name: i32,
    off: i16,
    len: i32,
}

/// In the order the program applies them (keepalive on before its timings). Not
/// `TCP_NOTSENT_LOWAT`: the kernel keeps it on the MPTCP socket and sets it to "unlimited" on
/// every subflow so as not to confuse its scheduler.
const OPTS: [Opt; 6] = [
    Opt {
        bit: 1,
        label: "TCP_NODELAY",
        level: libc::IPPROTO_TCP,
        name: libc::TCP_NODELAY,
        off: V_NODELAY,
        len: 4,
    },
    Opt {
        bit: 2,
        label: "SO_KEEPALIVE",
        level: libc::SOL_SOCKET,
        name: libc::SO_KEEPALIVE,
        off: V_KEEPALIVE,
        len: 4,
    },
    Opt {
        bit: 4,
        label: "TCP_KEEPIDLE",
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPIDLE,
        off: V_KEEPIDLE,
        len: 4,
    },
    Opt {
        bit: 8,
        label: "TCP_KEEPINTVL",
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPINTVL,
        off: V_KEEPINTVL,
        len: 4,
    },
    Opt {
        bit: 16,
        label: "TCP_KEEPCNT",
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPCNT,
        off: V_KEEPCNT,
        len: 4,
    },
    Opt {
        bit: 32,
        label: "TCP_CONGESTION",
        level: libc::IPPROTO_TCP,
        name: libc::TCP_CONGESTION,
        off: V_CC,
        len: CC_LEN,
    },
];

/// The map key of a subflow from `local` to `remote` in the namespace `netns_cookie`. The
/// local port plays no part: the kernel picks it.
pub fn key(netns_cookie: u64, local: IpAddr, remote: SocketAddr) -> [u8; KEY_SIZE] {
    let mut k = [0u8; KEY_SIZE];
    k[0..8].copy_from_slice(&netns_cookie.to_ne_bytes());
    let (family, l, r): (u32, Vec<u8>, Vec<u8>) = match (local, remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            (libc::AF_INET as u32, l.octets().into(), r.octets().into())
        }
        (l, r) => (libc::AF_INET6 as u32, v6(l).into(), v6(r).into()),
    };
    k[8..8 + l.len()].copy_from_slice(&l);
    k[24..24 + r.len()].copy_from_slice(&r);
    // bpf_sock_ops.remote_port: the port's network-order bytes in the upper half of the u32
    // on little-endian machines (the kernel shifts them there), in the lower half otherwise.
    let port_raw = u32::from(u16::from_ne_bytes(remote.port().to_be_bytes()));
    let port = if cfg!(target_endian = "little") {
        port_raw << 16
    } else {
        port_raw
    };
    k[40..44].copy_from_slice(&port.to_ne_bytes());
    k[44..48].copy_from_slice(&family.to_ne_bytes());
    k
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The map value carrying `o` (not `notsent_lowat`, which belongs to the MPTCP socket).
pub fn value(o: &TcpOptions) -> [u8; VALUE_SIZE] {
    let mut v = [0u8; VALUE_SIZE];
    let mut flags = 0u32;
    let mut put = |off: i16, x: i32| {
        v[off as usize..off as usize + 4].copy_from_slice(&x.to_ne_bytes());
    };
    if let Some(on) = o.nodelay {
        flags |= 1;
        put(V_NODELAY, on.into());
    }
    if let Some(k) = o.keepalive {
        flags |= 2 | 4 | 8 | 16;
        put(V_KEEPALIVE, 1);
        // TcpOptions::check bounds them far below i32::MAX.
        put(V_KEEPIDLE, k.idle_secs as i32);
        put(V_KEEPINTVL, k.interval_secs as i32);
        put(V_KEEPCNT, k.count as i32);
    }
    if let Some(cc) = &o.congestion {
        flags |= 32;
        let b = cc.as_bytes();
        let n = b.len().min(CC_LEN as usize - 1);
        v[V_CC as usize..V_CC as usize + n].copy_from_slice(&b[..n]);
    }
    v[0..4].copy_from_slice(&flags.to_ne_bytes());
    v
}

/// What the program did with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It never ran for this entry: no socket with these addresses connected (a subflow in
    /// another cgroup than the one the program is attached to, or not created).
    NotRun,
    /// Every option asked for was applied.
    Applied,
    /// The kernel refused these options (names), with the last error number.
    Refused {
        /// The options refused, by their socket option names.
        options: Vec<&'static str>,
        /// The kernel's error (positive errno).
        errno: i32,
    },
}

/// Reads an entry's outcome from the value the program left.
pub fn outcome(v: &[u8; VALUE_SIZE]) -> Outcome {
    let at = |off: i16| {
        u32::from_ne_bytes(
            v[off as usize..off as usize + 4]
                .try_into()
                .unwrap_or_default(),
        )
    };
    let (flags, applied, refused) = (at(V_FLAGS), at(V_APPLIED), at(V_REFUSED));
    if refused != 0 {
        return Outcome::Refused {
            options: OPTS
                .iter()
                .filter(|o| refused & o.bit != 0)
                .map(|o| o.label)
                .collect(),
            errno: -(at(V_ERRNO) as i32),
        };
    }
    if applied == flags {
        Outcome::Applied
    } else {
        Outcome::NotRun
    }
}

// ---- the program ----

const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_OR: u8 = 0x40;
const BPF_AND: u8 = 0x50;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_JSLT: u8 = 0xc0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_PSEUDO_MAP_FD: u8 = 1;

const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_SETSOCKOPT: i32 = 49;
const FN_GET_NETNS_COOKIE: i32 = 122;
/// `BPF_SOCK_OPS_TCP_CONNECT_CB`.
const OP_TCP_CONNECT_CB: i32 = 3;
/// Offsets in `struct bpf_sock_ops`.
const CTX_OP: i16 = 0;
const CTX_FAMILY: i16 = 20;
const CTX_REMOTE_IP4: i16 = 24;
const CTX_LOCAL_IP4: i16 = 28;
const CTX_REMOTE_IP6: i16 = 32;
const CTX_LOCAL_IP6: i16 = 48;
const CTX_REMOTE_PORT: i16 = 64;

/// One instruction: opcode, registers (dst low nibble, src high), offset, immediate.
#[derive(Debug, Clone, Copy)]
struct Insn(u8, u8, i16, i32);

impl Insn {
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.0;
        b[1] = self.1;
        b[2..4].copy_from_slice(&self.2.to_ne_bytes());
        b[4..8].copy_from_slice(&self.3.to_ne_bytes());
        b
    }
}

/// A tiny assembler with forward labels.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    /// (instruction index, label) of jumps to fix.
    fixups: Vec<(usize, &'static str)>,
    labels: HashMap<&'static str, usize>,
}

fn regs(dst: u8, src: u8) -> u8 {
    (src << 4) | dst
}

impl Asm {
    fn op(&mut self, i: Insn) -> &mut Self {
        self.code.push(i);
        self
    }
    fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.op(Insn(BPF_ALU64 | BPF_MOV | BPF_X, regs(dst, src), 0, 0))
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(Insn(BPF_ALU64 | BPF_MOV | BPF_K, regs(dst, 0), 0, imm))
    }
    fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(Insn(BPF_ALU64 | BPF_ADD | BPF_K, regs(dst, 0), 0, imm))
    }
    fn alu32_imm(&mut self, op: u8, dst: u8, imm: i32) -> &mut Self {
        self.op(Insn(BPF_ALU | op | BPF_K, regs(dst, 0), 0, imm))
    }
    fn ldx(&mut self, size: u8, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(Insn(BPF_LDX | BPF_MEM | size, regs(dst, src), off, 0))
    }
    fn stx(&mut self, size: u8, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(Insn(BPF_STX | BPF_MEM | size, regs(dst, src), off, 0))
    }
    fn st_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.op(Insn(BPF_ST | BPF_MEM | size, regs(dst, 0), off, imm))
    }
    fn ld_map_fd(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.op(Insn(
            BPF_LD | BPF_DW | BPF_IMM,
            regs(dst, BPF_PSEUDO_MAP_FD),
            0,
            fd,
        ))
        .op(Insn(0, 0, 0, 0))
    }
    fn call(&mut self, f: i32) -> &mut Self {
        self.op(Insn(BPF_JMP | BPF_CALL, 0, 0, f))
    }
    fn jmp_imm(&mut self, op: u8, dst: u8, imm: i32, to: &'static str) -> &mut Self {
        self.fixups.push((self.code.len(), to));
        self.op(Insn(BPF_JMP | op | BPF_K, regs(dst, 0), 0, imm))
    }
    fn ja(&mut self, to: &'static str) -> &mut Self {
        self.fixups.push((self.code.len(), to));
        self.op(Insn(BPF_JMP | BPF_JA, 0, 0, 0))
    }
    fn label(&mut self, l: &'static str) -> &mut Self {
        self.labels.insert(l, self.code.len());
        self
    }
    fn finish(mut self) -> Vec<u8> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l];
            self.code[at].2 = (target as i64 - at as i64 - 1) as i16;
        }
        self.code.iter().flat_map(|i| i.bytes()).collect()
    }
}

/// The sock_ops program, with the map's descriptor `map_fd` in its lookup.
fn program(map_fd: i32) -> Vec<u8> {
    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R5: u8 = 5;
    const R6: u8 = 6;
    const R7: u8 = 7;
    const FP: u8 = 10;
    const KEY: i16 = -(KEY_SIZE as i16);
    let mut a = Asm::default();
    a.mov(R6, R1)
        .ldx(BPF_W, R2, R6, CTX_OP)
        .jmp_imm(BPF_JNE, R2, OP_TCP_CONNECT_CB, "exit");
    for i in 0..(KEY_SIZE as i16 / 8) {
        a.st_imm(BPF_DW, FP, KEY + 8 * i, 0);
    }
    a.mov(R1, R6)
        .call(FN_GET_NETNS_COOKIE)
        .stx(BPF_DW, FP, KEY, R0)
        .ldx(BPF_W, R2, R6, CTX_FAMILY)
        .stx(BPF_W, FP, KEY + 44, R2)
        .jmp_imm(BPF_JEQ, R2, libc::AF_INET, "v4")
        .jmp_imm(BPF_JNE, R2, libc::AF_INET6, "exit");
    for i in 0..4 {
        a.ldx(BPF_W, R3, R6, CTX_LOCAL_IP6 + 4 * i)
            .stx(BPF_W, FP, KEY + 8 + 4 * i, R3)
            .ldx(BPF_W, R3, R6, CTX_REMOTE_IP6 + 4 * i)
            .stx(BPF_W, FP, KEY + 24 + 4 * i, R3);
    }
    a.ja("port")
        .label("v4")
        .ldx(BPF_W, R3, R6, CTX_LOCAL_IP4)
        .stx(BPF_W, FP, KEY + 8, R3)
        .ldx(BPF_W, R3, R6, CTX_REMOTE_IP4)
        .stx(BPF_W, FP, KEY + 24, R3)
        .label("port")
        .ldx(BPF_W, R3, R6, CTX_REMOTE_PORT)
        .stx(BPF_W, FP, KEY + 40, R3)
        .ld_map_fd(R1, map_fd)
        .mov(R2, FP)
        .add_imm(R2, KEY as i32)
        .call(FN_MAP_LOOKUP_ELEM)
        // No entry: not a subflow roamd was asked about. Leave it alone.
        .jmp_imm(BPF_JEQ, R0, 0, "exit")
        .mov(R7, R0);
    const NEXT: [&str; OPTS.len()] = ["n0", "n1", "n2", "n3", "n4", "n5"];
    const FAIL: [&str; OPTS.len()] = ["f0", "f1", "f2", "f3", "f4", "f5"];
    for (i, o) in OPTS.iter().enumerate() {
        a.ldx(BPF_W, R2, R7, V_FLAGS)
            .alu32_imm(BPF_AND, R2, o.bit as i32)
            .jmp_imm(BPF_JEQ, R2, 0, NEXT[i])
            .mov(R1, R6)
            .mov_imm(R2, o.level)
            .mov_imm(R3, o.name)
            .mov(R4, R7)
            .add_imm(R4, o.off.into())
            .mov_imm(R5, o.len)
            .call(FN_SETSOCKOPT)
            .jmp_imm(BPF_JSLT, R0, 0, FAIL[i])
            .ldx(BPF_W, R2, R7, V_APPLIED)
            .alu32_imm(BPF_OR, R2, o.bit as i32)
            .stx(BPF_W, R7, V_APPLIED, R2)
            .ja(NEXT[i])
            .label(FAIL[i])
            .ldx(BPF_W, R2, R7, V_REFUSED)
            .alu32_imm(BPF_OR, R2, o.bit as i32)
            .stx(BPF_W, R7, V_REFUSED, R2)
            .stx(BPF_W, R7, V_ERRNO, R0)
            .label(NEXT[i]);
    }
    a.label("exit")
        .mov_imm(R0, 1)
        .op(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0));
    a.finish()
}

// ---- bpf(2) ----

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
const BPF_CGROUP_SOCK_OPS: u32 = 3;
const BPF_NOEXIST: u64 = 1;

/// `union bpf_attr`, zeroed, as wide as any command here needs.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

/// Runs bpf(2) command `cmd` on `attr` and returns its result (a new descriptor for the
/// commands that make one).
///
/// # Safety
/// The kernel follows what `attr` holds, so the caller must make sure that:
/// - every pointer in it (written as an integer with [`Attr::u64`]) points to memory that
///   stays valid for the whole call and is at least as large as the command reads or writes
///   there: the map's key and value sizes for element commands, the instruction count times 8,
///   the log size given; memory the kernel writes (a lookup's value, the verifier log) must be
///   writable and not otherwise borrowed;
/// - every descriptor in it is open for the whole call.
unsafe fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-initialised `union bpf_attr` of 128 bytes, valid for the call;
    // the kernel reads and writes at most the size given; the memory and descriptors it names
    // are valid by this function's contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Takes ownership of descriptor `r`, which closes when the result is dropped.
///
/// # Safety
/// `r` must be an open descriptor that nothing else owns or closes: the result of a bpf
/// command that makes one (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_LINK_CREATE`), passed here
/// once.
unsafe fn fd_of(r: i64) -> OwnedFd {
    debug_assert!(
        (0..=i64::from(i32::MAX)).contains(&r),
        "not a descriptor: {r}"
    );
    // SAFETY: an open descriptor owned by nothing else, by this function's contract.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// The loaded program, its map and the link attaching it to a cgroup. Dropping it (or roamd
/// ending) closes the link and the program is detached.
#[derive(Debug)]
pub struct SubflowOptions {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    netns_cookie: u64,
    cgroup: PathBuf,
}

impl SubflowOptions {
    /// Loads the program and attaches it to `cgroup` (default: the cgroup2 mount's root, from
    /// /proc/self/mountinfo). The error says what failed and what to do.
    pub fn open(cgroup: Option<&Path>) -> Result<SubflowOptions, String> {
        let cgroup = match cgroup {
            Some(c) => c.to_path_buf(),
            None => cgroup2_root(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
                .ok_or("no cgroup v2 file system is mounted (none in /proc/self/mountinfo); mount one (`mount -t cgroup2 none /sys/fs/cgroup`) or name one with `[mptcp] bpf_cgroup`")?,
        };
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&cgroup)
            .map_err(|e| {
                format!(
                    "opening the cgroup {}: {e}; set `[mptcp] bpf_cgroup` to a cgroup v2 \
                     directory that holds the apps, or leave it out for the cgroup2 mount's root",
                    cgroup.display()
                )
            })?;
        let netns_cookie = netns_cookie().map_err(|e| {
            format!("reading this network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14): {e}")
        })?;
        let privilege = "; loading BPF needs CAP_BPF and CAP_NET_ADMIN (run roamd as root or \
                         give it those capabilities)";
        // SAFETY: BPF_MAP_CREATE's attributes hold no pointer and no descriptor; its result
        // is a new descriptor, owned by nothing else, taken once.
        let map = unsafe {
            fd_of(
                bpf(
                    BPF_MAP_CREATE,
                    Attr::new()
                        .u32(0, BPF_MAP_TYPE_HASH)
                        .u32(4, KEY_SIZE as u32)
                        .u32(8, VALUE_SIZE as u32)
                        .u32(12, MAX_ENTRIES),
                )
                .map_err(|e| format!("creating the BPF hash map: {e}{privilege}"))?,
            )
        };
        let code = program(map.as_raw_fd());
        let license = CString::new("Dual MIT/GPL").unwrap_or_default();
        let mut log = vec![0u8; 64 * 1024];
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"roam_sf_opt");
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_SOCK_OPS)
            .u32(4, (code.len() / 8) as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64)
            .u32(68, BPF_CGROUP_SOCK_OPS);
        attr.0[48..64].copy_from_slice(&name);
        // SAFETY: `code` (its length / 8 instructions), `license` (NUL-terminated) and `log`
        // (writable, its length given) are locals that outlive the call and are not otherwise
        // borrowed during it; the result is a new descriptor, owned by nothing else, taken once.
        let prog = match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
            // SAFETY: `fd` is the new descriptor BPF_PROG_LOAD just made, taken once.
            Ok(fd) => unsafe { fd_of(fd) },
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let verifier = String::from_utf8_lossy(&log[..end]);
                return Err(format!(
                    "loading the sock_ops program: {e}{privilege}{}",
                    if verifier.trim().is_empty() {
                        String::new()
                    } else {
                        format!("\nthe verifier said:\n{verifier}")
                    }
                ));
            }
        };
        // SAFETY: no pointers; the program's and the cgroup's descriptors are open (`prog`,
        // `dir` live past the call); the result is a new descriptor, owned by nothing else,
        // taken once.
        let link = unsafe {
            fd_of(
                bpf(
                    BPF_LINK_CREATE,
                    Attr::new()
                        .u32(0, prog.as_raw_fd() as u32)
                        .u32(4, dir.as_raw_fd() as u32)
                        .u32(8, BPF_CGROUP_SOCK_OPS),
                )
                .map_err(|e| {
                    format!(
                        "attaching the sock_ops program to the cgroup {} (BPF_LINK_CREATE, Linux 5.7): {e}",
                        cgroup.display()
                    )
                })?,
            )
        };
        Ok(SubflowOptions {
            map,
            _prog: prog,
            _link: link,
            netns_cookie,
            cgroup,
        })
    }

    /// The cgroup the program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The key of a subflow of this namespace.
    pub fn key(&self, local: IpAddr, remote: SocketAddr) -> [u8; KEY_SIZE] {
        key(self.netns_cookie, local, remote)
    }

    /// Records `options` for the next subflow from `local` to `remote`. Fails with
    /// `EEXIST` while another one with these addresses is under way, and `E2BIG` when
    /// [`MAX_ENTRIES`] are.
    pub fn insert(&self, k: &[u8; KEY_SIZE], options: &TcpOptions) -> io::Result<()> {
        let v = value(options);
        // SAFETY: `k` and `v` are the map's key and value sizes (it was created with
        // KEY_SIZE / VALUE_SIZE) and live past the call, which only reads them; `map` is open.
        unsafe {
            bpf(
                BPF_MAP_UPDATE_ELEM,
                Attr::new()
                    .u32(0, self.map.as_raw_fd() as u32)
                    .u64(8, k.as_ptr() as u64)
                    .u64(16, v.as_ptr() as u64)
                    .u64(24, BPF_NOEXIST),
            )
        }
        .map(drop)
    }

    /// Removes the entry and says what the program did with it.
    pub fn take(&self, k: &[u8; KEY_SIZE]) -> io::Result<Outcome> {
        let mut v = [0u8; VALUE_SIZE];
        // SAFETY: `k` is the map's key size and only read; `v`, the map's value size, is a
        // local the kernel writes and nothing else borrows during the call; `map` is open.
        unsafe {
            bpf(
                BPF_MAP_LOOKUP_ELEM,
                Attr::new()
                    .u32(0, self.map.as_raw_fd() as u32)
                    .u64(8, k.as_ptr() as u64)
                    .u64(16, v.as_mut_ptr() as u64),
            )
        }?;
        self.remove(k)?;
        Ok(outcome(&v))
    }

    /// Removes the entry, if any.
    pub fn remove(&self, k: &[u8; KEY_SIZE]) -> io::Result<()> {
        // SAFETY: `k` is the map's key size, lives past the call and is only read; `map` is
        // open.
        let r = unsafe {
            bpf(
                BPF_MAP_DELETE_ELEM,
                Attr::new()
                    .u32(0, self.map.as_raw_fd() as u32)
                    .u64(8, k.as_ptr() as u64),
            )
        };
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// This network namespace's cookie (what `bpf_get_netns_cookie` answers for its sockets).
fn netns_cookie() -> io::Result<u64> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
    let mut c = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `c` is valid for writes of `len` bytes; the socket is open for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut c as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(c)
}

/// The mount point of the first cgroup2 file system in a `/proc/self/mountinfo` text (the
/// field after `-` is the type).
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_wherever_it_is() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "25 30 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_root(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_root("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"),
            None
        );
    }

    #[test]
    fn keys_hold_the_addresses_as_the_sock_ops_context_does() {
        let k = key(
            7,
            "198.18.1.2".parse().unwrap(),
            "198.19.0.1:4433".parse().unwrap(),
        );
        assert_eq!(u64::from_ne_bytes(k[0..8].try_into().unwrap()), 7);
        assert_eq!(&k[8..12], &[198, 18, 1, 2]);
        assert_eq!(&k[12..24], &[0; 12]);
        assert_eq!(&k[24..28], &[198, 19, 0, 1]);
        // 4433 = 0x1151: network-order bytes 0x11 0x51.
        if cfg!(target_endian = "little") {
            assert_eq!(&k[40..44], &[0, 0, 0x11, 0x51]);
        }
        assert_eq!(
            u32::from_ne_bytes(k[44..48].try_into().unwrap()),
            libc::AF_INET as u32
        );
        let k6 = key(
            7,
            "2001:db8:1::2".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        assert_eq!(
            u32::from_ne_bytes(k6[44..48].try_into().unwrap()),
            libc::AF_INET6 as u32
        );
        assert_eq!(
            &k6[8..24],
            &"2001:db8:1::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn values_carry_only_the_options_asked_for_and_outcomes_name_the_refused() {
        let v = value(&TcpOptions::new().congestion("reno"));
        assert_eq!(u32::from_ne_bytes(v[0..4].try_into().unwrap()), 32);
        assert_eq!(&v[28..33], b"reno\0");
        assert_eq!(outcome(&v), Outcome::NotRun);
        let mut done = v;
        done[44..48].copy_from_slice(&32u32.to_ne_bytes());
        assert_eq!(outcome(&done), Outcome::Applied);
        let mut refused = v;
        refused[48..52].copy_from_slice(&32u32.to_ne_bytes());
        refused[52..56].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            outcome(&refused),
            Outcome::Refused {
                options: vec!["TCP_CONGESTION"],
                errno: libc::ENOENT
            }
        );
        let all = value(&TcpOptions::new().nodelay(false).keepalive(30, 5, 3));
        assert_eq!(
            u32::from_ne_bytes(all[0..4].try_into().unwrap()),
            1 | 2 | 4 | 8 | 16
        );
    }

    /// The verifier takes the program and it attaches to a cgroup of its own (root only;
    /// with `CI` set a missing privilege fails instead of skipping). An entry is written,
    /// read back unrun, and removed; a second insert of the same key is refused. A TCP
    /// connection made from the cgroup gets its entry's options, and the program is gone from
    /// the cgroup once the link is closed.
    #[test]
    fn the_kernel_loads_and_attaches_the_program() {
        // SAFETY: plain system call.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI: this test needs root");
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        let root = cgroup2_root(&std::fs::read_to_string("/proc/self/mountinfo").unwrap())
            .expect("a cgroup2 mount");
        let cg = root.join(format!("roam-subflow-opts-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let r = SubflowOptions::open(Some(&cg));
        let so = r.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir(&cg);
            panic!("{e}")
        });
        let k = so.key(
            "198.18.1.2".parse().unwrap(),
            "198.19.0.1:4433".parse().unwrap(),
        );
        so.insert(&k, &TcpOptions::new().congestion("reno"))
            .unwrap();
        let again = so.insert(&k, &TcpOptions::new()).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(so.take(&k).unwrap(), Outcome::NotRun);
        assert_eq!(so.take(&k).unwrap_err().raw_os_error(), Some(libc::ENOENT));

        // A TCP connection from this process, moved into the cgroup, to a listener on
        // loopback: the entry's options are on the connecting socket, the listener's accepted
        // socket (no entry, and passive) keeps the defaults.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let k = so.key("127.0.0.1".parse().unwrap(), to);
        so.insert(
            &k,
            &TcpOptions::new().congestion("reno").keepalive(45, 5, 3),
        )
        .unwrap();
        let pid = std::process::id().to_string();
        std::fs::write(cg.join("cgroup.procs"), &pid).unwrap();
        let c = std::net::TcpStream::connect(to);
        std::fs::write(root.join("cgroup.procs"), &pid).unwrap();
        let c = c.unwrap();
        let (a, _) = l.accept().unwrap();
        let outcome = so.take(&k).unwrap();
        let cc = |s: &std::net::TcpStream| {
            let mut b = [0u8; 16];
            let mut len = 16 as libc::socklen_t;
            // SAFETY: `b` is valid for `len` bytes.
            let r = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_CONGESTION,
                    b.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0);
            String::from_utf8_lossy(&b[..b.iter().position(|&x| x == 0).unwrap_or(16)]).into_owned()
        };
        let ka = socket2::SockRef::from(&c).keepalive().unwrap();
        let (ccc, cca) = (cc(&c), cc(&a));
        // The bpf_link is the only thing holding the program on the cgroup: closing it (as
        // roamd's exit or crash does) detaches it.
        let attached_with = attached(&cg);
        drop(so);
        let attached_after = attached(&cg);
        std::fs::remove_dir(&cg).unwrap();
        assert_eq!(
            (attached_with, attached_after),
            (1, 0),
            "programs on the cgroup"
        );
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(ccc, "reno");
        assert!(ka);
        assert_ne!(cca, "reno", "the accepted socket had no entry");
    }

    /// How many sock_ops programs are attached to the cgroup `dir` (`BPF_PROG_QUERY`).
    fn attached(dir: &Path) -> u32 {
        const BPF_PROG_QUERY: i32 = 16;
        let d = std::fs::File::open(dir).unwrap();
        let mut a = Attr::new();
        a.u32(0, d.as_raw_fd() as u32).u32(4, BPF_CGROUP_SOCK_OPS);
        // SAFETY: no pointers (no id array asked for); `d` is open for the call.
        unsafe { bpf(BPF_PROG_QUERY, &mut a) }.unwrap();
        u32::from_ne_bytes(a.0[24..28].try_into().unwrap())
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program(3);
        let n = p.len() / 8;
        for (i, insn) in p.chunks(8).enumerate() {
            let class = insn[0] & 0x07;
            let op = insn[0] & 0xf0;
            if class == BPF_JMP && op != BPF_CALL && op != BPF_EXIT {
                let off = i16::from_ne_bytes([insn[2], insn[3]]) as i64;
                let to = i as i64 + 1 + off;
                assert!((0..n as i64).contains(&to), "jump at {i} to {to} of {n}");
            }
        }
    }
}
