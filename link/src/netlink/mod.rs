//! The kernel's netlink wire formats roam speaks, typed: parse and emit, no sockets.
