//! Which Linux capabilities this process holds, so roamd can say at start what it cannot do.

/// `CAP_NET_ADMIN`: routing rules, MPTCP endpoints, the userspace path manager.
pub const NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`: `SO_BINDTODEVICE`, which every probe needs.
pub const NET_RAW: u32 = 13;

/// Whether this process holds capability number `bit` (`CapEff` in `/proc/self/status`).
pub fn has(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1u64 << bit) != 0)
}
