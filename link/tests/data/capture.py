#!/usr/bin/env python3
"""Captures the netlink messages roam speaks, from the running kernel, once.

Run as root: `python3 link/tests/data/capture.py link/tests/data`. Everything happens in two
network namespaces of its own (`roamcap` with the client, `roamcap-srv` with an echo server; both
deleted at the end). Requests are built here by hand
from the uapi headers (independently of roam's Rust emitter); every request and every message
the kernel sends back is written as hex, one file per exchange (`>` lines: bytes sent, `<`
lines: one datagram received each), so the Rust tests pin the kernel's real bytes.
"""
import os, socket, struct, subprocess, sys, time

NS = "roamcap"
SRV = "roamcap-srv"
OUT = None
NETLINK_GENERIC, NETLINK_SOCK_DIAG = 16, 4
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 1, 10, 11
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
GENL_ID_CTRL = 0x10
IPPROTO_MPTCP = 262


def nla(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def nlmsg(kind, flags, seq, body):
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def genl(family, cmd, version, flags, seq, attrs):
    return nlmsg(family, flags, seq, struct.pack("=BBH", cmd, version, 0) + attrs)


class Nl:
    def __init__(self, proto, extack=True):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
        self.s.bind((0, 0))
        if extack:
            # As roam's request socket: the kernel's message with an error, request not echoed.
            self.s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.s.settimeout(2)

    def exchange(self, name, note, req, until_done):
        self.s.send(req)
        got = []
        while True:
            d = self.s.recv(65536)
            got.append(d)
            kind = struct.unpack_from("=H", d, 4)[0]
            # The last message of the datagram decides.
            off, last = 0, kind
            while off + 16 <= len(d):
                n, last = struct.unpack_from("=IH", d, off)
                off += (n + 3) & ~3
            if last in (NLMSG_ERROR, NLMSG_DONE) or not until_done:
                break
        write(name, note, [(">", req)] + [("<", g) for g in got])
        return got


def write(name, note, parts):
    with open(os.path.join(OUT, name + ".hex"), "w") as f:
        f.write("# " + note + "\n")
        f.write("# captured on Linux %s by link/tests/data/capture.py\n" % os.uname().release)
        for d, b in parts:
            f.write(d + " " + b.hex() + "\n")


def attrs(b):
    out, off = [], 0
    while off + 4 <= len(b):
        n, k = struct.unpack_from("=HH", b, off)
        if n < 4:
            break
        out.append((k & 0x3FFF, b[off + 4 : off + n]))
        off += (n + 3) & ~3
    return out


def family(nl):
    got = nl.exchange(
        "ctrl_getfamily_mptcp_pm",
        "CTRL_CMD_GETFAMILY for mptcp_pm (version 2, as roam asks) and the kernel's NEWFAMILY + ack",
        genl(GENL_ID_CTRL, 3, 2, NLM_F_REQUEST | NLM_F_ACK, 1, nla(2, b"mptcp_pm\0")),
        True,
    )
    a = dict(attrs(got[0][20:]))
    fid = struct.unpack("=H", a[1])[0]
    grp = None
    for _, g in attrs(a[7]):
        ga = dict(attrs(g))
        if ga[1] == b"mptcp_pm_events\0":
            grp = struct.unpack("=I", ga[2])[0]
    return fid, grp


def connect(port):
    """An MPTCP connection from 198.18.0.1 to the echo server's `port`, data both ways."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    c.bind(("198.18.0.1", 0))
    c.connect(("198.18.0.254", port))
    c.send(b"x" * 100)
    c.recv(100)
    return c


def drain(ev, into):
    """Appends the event datagrams queued on `ev` to `into`, until none comes for a while;
    returns the new ones."""
    new = []
    try:
        while True:
            new.append(ev.s.recv(65536))
    except socket.timeout:
        pass
    into.extend(new)
    return new


def addr_nest(kind, parts):
    return nla(kind | 0x8000, b"".join(parts))


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def inside():
    sh("sysctl -qw net.mptcp.enabled=1 net.mptcp.pm_type=0")
    sh("ip mptcp limits set subflows 4 add_addr_accepted 4")
    idx1 = socket.if_nametoindex("dummy1")
    nl = Nl(NETLINK_GENERIC)
    fid, grp = family(nl)

    ev = Nl(NETLINK_GENERIC, extack=False)
    ev.s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, grp)

    # In-kernel PM endpoints. Nested addresses are written in the order roam writes them:
    # family, address, id, port, flags, dev.
    nl.exchange(
        "pm_add_addr_v4",
        "MPTCP_PM_CMD_ADD_ADDR 198.18.1.1 id 201 subflow dev dummy1 (ifindex %d) and the ack" % idx1,
        genl(fid, 1, 1, NLM_F_REQUEST | NLM_F_ACK, 2, addr_nest(1, [
            nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.1.1")), nla(2, bytes([201])),
            nla(6, struct.pack("=I", 2)), nla(7, struct.pack("=i", idx1))])),
        False,
    )
    nl.exchange(
        "pm_add_addr_v6",
        "MPTCP_PM_CMD_ADD_ADDR 2001:db8::1 id 202 signal backup port 5000 and the ack",
        genl(fid, 1, 1, NLM_F_REQUEST | NLM_F_ACK, 3, addr_nest(1, [
            nla(1, struct.pack("=H", 10)),
            nla(4, socket.inet_pton(socket.AF_INET6, "2001:db8::1")), nla(2, bytes([202])),
            nla(5, struct.pack("=H", 5000)), nla(6, struct.pack("=I", 1 | 4))])),
        False,
    )
    nl.exchange(
        "pm_get_addr_dump",
        "MPTCP_PM_CMD_GET_ADDR dump (no attributes) and the kernel's endpoint list",
        genl(fid, 3, 1, NLM_F_REQUEST | NLM_F_DUMP, 4, b""),
        True,
    )
    nl.exchange(
        "pm_del_addr_missing",
        "MPTCP_PM_CMD_DEL_ADDR id 99 (no such endpoint) and the kernel's error with its extended ack",
        genl(fid, 2, 1, NLM_F_REQUEST | NLM_F_ACK, 5, addr_nest(1, [nla(2, bytes([99]))])),
        False,
    )

    # A connection: the kernel PM opens a second subflow from endpoint 201.
    cli = connect(4433)
    time.sleep(0.5)
    nl.exchange(
        "pm_set_flags_backup",
        "MPTCP_PM_CMD_SET_FLAGS id 201 198.18.1.1 backup (endpoint change) and the ack",
        genl(fid, 7, 1, NLM_F_REQUEST | NLM_F_ACK, 6, addr_nest(1, [
            nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.1.1")), nla(2, bytes([201])),
            nla(6, struct.pack("=I", 4))])),
        False,
    )
    time.sleep(0.3)

    # sock_diag: the joined subflow (client side, from 198.18.1.1), as roam's SDK asks for it.
    sub = None
    evs = []
    ev.s.settimeout(0.3)
    drain(ev, evs)
    for d in evs:
        a = dict(attrs(d[20:]))
        if d[16] == 10 and a.get(5) == socket.inet_aton("198.18.1.1") and 18 not in a:
            sub = (struct.unpack(">H", a[9])[0], struct.unpack(">H", a[10])[0])
    sd = Nl(NETLINK_SOCK_DIAG, extack=False)
    sockid = struct.pack(">HH", sub[0], sub[1]) + socket.inet_aton("198.18.1.1") + b"\0" * 12 \
        + socket.inet_aton("198.18.0.254") + b"\0" * 12 + struct.pack("=III", idx1, 0xFFFFFFFF, 0xFFFFFFFF)
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 1 << 1, 0, 0xFFFFFFFF) + sockid
    sd.exchange(
        "sock_diag_subflow_backup",
        "SOCK_DIAG_BY_FAMILY for the subflow 198.18.1.1:%d -> 198.18.0.254:4433 on dummy1 (ext INET_DIAG_INFO) after SET_FLAGS backup, and the kernel's inet_diag_msg" % sub[0],
        nlmsg(20, NLM_F_REQUEST, 7, req),
        False,
    )
    sockid_gone = struct.pack(">HH", 1, 2) + sockid[4:]
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 1 << 1, 0, 0xFFFFFFFF) + sockid_gone
    sd.exchange(
        "sock_diag_no_such_socket",
        "SOCK_DIAG_BY_FAMILY for a socket that does not exist (ports 1 -> 2) and the kernel's error",
        nlmsg(20, NLM_F_REQUEST, 8, req),
        False,
    )
    nl.exchange(
        "pm_del_addr",
        "MPTCP_PM_CMD_DEL_ADDR id 201 (closes its subflow) and the ack",
        genl(fid, 2, 1, NLM_F_REQUEST | NLM_F_ACK, 9, addr_nest(1, [nla(2, bytes([201]))])),
        False,
    )
    time.sleep(0.3)
    cli.close()
    time.sleep(0.5)
    drain(ev, evs)
    write("events_kernel_pm", "mptcp_pm_events datagrams for one connection under the in-kernel PM: the listener of the signal endpoint with a port, created, established, a joined subflow from endpoint 201, its close when the endpoint went, the close (client side; this kernel sends no SUB_PRIORITY for a change made here)", [("<", d) for d in evs])

    # The userspace PM: roamd's requests by token.
    sh("sysctl -qw net.mptcp.pm_type=1")
    cli2 = connect(4434)
    time.sleep(0.3)
    evs = []
    drain(ev, evs)
    token = None
    for d in evs:
        a = dict(attrs(d[20:]))
        if d[16] == 2 and 18 not in a:
            token = struct.unpack("=I", a[1])[0]
    # roam's order: token, local address nest (family, address, id, flags, dev), remote nest
    # (family, address, port).
    local = addr_nest(1, [nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.1.1")),
                          nla(2, bytes([7])), nla(6, struct.pack("=I", 0)), nla(7, struct.pack("=i", idx1))])
    remote = addr_nest(6, [nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.0.254")),
                           nla(5, struct.pack("=H", 4434))])
    nl.exchange(
        "pm_subflow_create",
        "MPTCP_PM_CMD_SUBFLOW_CREATE token %#x from 198.18.1.1 id 7 dev dummy1 to 198.18.0.254:4434 and the ack" % token,
        genl(fid, 10, 1, NLM_F_REQUEST | NLM_F_ACK, 10, nla(4, struct.pack("=I", token)) + local + remote),
        False,
    )
    time.sleep(0.3)
    lport = None
    for d in drain(ev, evs):
        a = dict(attrs(d[20:]))
        if d[16] == 10 and 18 not in a and a.get(5) == socket.inet_aton("198.18.1.1"):
            lport = struct.unpack(">H", a[9])[0]
    local_p = addr_nest(1, [nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.1.1")),
                            nla(5, struct.pack("=H", lport)), nla(6, struct.pack("=I", 4))])
    nl.exchange(
        "pm_set_flags_token",
        "MPTCP_PM_CMD_SET_FLAGS token %#x 198.18.1.1:%d -> 198.18.0.254:4434 backup (MP_PRIO) and the ack" % (token, lport),
        genl(fid, 7, 1, NLM_F_REQUEST | NLM_F_ACK, 11, nla(4, struct.pack("=I", token)) + local_p + remote),
        False,
    )
    local_d = addr_nest(1, [nla(1, struct.pack("=H", 2)), nla(3, socket.inet_aton("198.18.1.1")),
                            nla(5, struct.pack("=H", lport))])
    nl.exchange(
        "pm_subflow_destroy",
        "MPTCP_PM_CMD_SUBFLOW_DESTROY token %#x 198.18.1.1:%d -> 198.18.0.254:4434 and the ack" % (token, lport),
        genl(fid, 11, 1, NLM_F_REQUEST | NLM_F_ACK, 12, nla(4, struct.pack("=I", token)) + local_d + remote),
        False,
    )
    nl.exchange(
        "pm_subflow_create_bad_token",
        "MPTCP_PM_CMD_SUBFLOW_CREATE for token 0xdeadbeef (none) and the kernel's error with its extended ack",
        genl(fid, 10, 1, NLM_F_REQUEST | NLM_F_ACK, 13, nla(4, struct.pack("=I", 0xDEADBEEF)) + local + remote),
        False,
    )
    time.sleep(0.3)
    cli2.close()
    time.sleep(0.5)
    drain(ev, evs)
    sh("sysctl -qw net.mptcp.pm_type=0")
    strace_ip("ip_endpoint_add", "`ip mptcp endpoint add 198.18.0.1 id 9 subflow backup dev dummy0` and the ack",
              ["mptcp", "endpoint", "add", "198.18.0.1", "id", "9", "subflow", "backup", "dev", "dummy0"])
    strace_ip("ip_endpoint_show", "`ip mptcp endpoint show`: the dump request and the kernel's list (ids 9 and 202)",
              ["mptcp", "endpoint", "show"])
    strace_ip("ip_endpoint_change", "`ip mptcp endpoint change id 9 nobackup` and the ack",
              ["mptcp", "endpoint", "change", "id", "9", "nobackup"])
    strace_ip("ip_endpoint_delete", "`ip mptcp endpoint delete id 9` and the ack",
              ["mptcp", "endpoint", "delete", "id", "9"])
    write("events_userspace_pm", "mptcp_pm_events datagrams for one connection under the userspace PM, with a subflow created and destroyed by token (the pm_subflow_* and pm_set_flags_token requests; no SUB_PRIORITY for the change made here)", [("<", d) for d in evs])


def strace_ip(name, note, args):
    """Runs `ip ARGS` under strace and records its last generic netlink request (fd 4: iproute2
    opens its rtnetlink socket first) and the kernel's answers to it: iproute2 as a second,
    independent emitter."""
    log = "/tmp/roamcap-strace.%d" % os.getpid()
    subprocess.run(["strace", "-qq", "-e", "trace=sendmsg,sendto,recvmsg", "-e", "write=4", "-e", "read=4",
                    "-o", log, "ip"] + args, check=True, stdout=subprocess.DEVNULL)
    calls = []
    with open(log) as f:
        for line in f:
            if line.startswith(("sendmsg(", "sendto(", "recvmsg(")):
                kind = "recv" if line.startswith("recv") else "send"
                calls.append((kind, line.split("(")[1].split(",")[0], bytearray()))
            elif line.startswith(" | ") and calls:
                calls[-1][2].extend(bytes.fromhex("".join(line[10:58].split())))
    os.unlink(log)
    calls = [c for c in calls if c[1] == "4" and c[2]]
    last = max(i for i, c in enumerate(calls) if c[0] == "send")
    write(name, note + " (%s, recorded with strace)" % subprocess.run(
        ["ip", "-V"], capture_output=True, text=True).stdout.split(",")[1].strip(),
        [(">" if c[0] == "send" else "<", bytes(c[2])) for c in calls[last:]])


def main():
    global OUT
    OUT = os.path.abspath(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "--inside":
        inside()
        return
    if len(sys.argv) > 2 and sys.argv[2] == "--server":
        server()
        return
    for ns in (NS, SRV):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        sh("ip netns add " + ns)
    srv = None
    try:
        # Two links from the client (dummy0, dummy1: veth pairs) to the server, which answers
        # on 198.18.0.254 and routes 198.18.1.0/24 back on the second link.
        sh("ip -n %s link set lo up && ip -n %s link set lo up" % (NS, SRV))
        for i in (0, 1):
            sh("ip link add dummy%d netns %s type veth peer name peer%d netns %s" % (i, NS, i, SRV))
            sh("ip -n %s link set dummy%d up && ip -n %s link set peer%d up" % (NS, i, SRV, i))
            sh("ip -n %s addr add 198.18.%d.1/24 dev dummy%d" % (NS, i, i))
            sh("ip -n %s addr add 198.18.%d.254/24 dev peer%d" % (SRV, i, i))
        sh("ip -n %s addr add 2001:db8::1/64 dev dummy1 nodad" % NS)
        sh("ip -n %s route add 198.18.0.254 via 198.18.1.254 dev dummy1 table 100" % NS)
        sh("ip -n %s rule add from 198.18.1.1 table 100" % NS)
        sh("ip netns exec %s sysctl -qw net.mptcp.enabled=1" % SRV)
        sh("ip -n %s mptcp limits set subflows 4 add_addr_accepted 4" % SRV)
        srv = subprocess.Popen(["ip", "netns", "exec", SRV, sys.executable, __file__, OUT, "--server"])
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, OUT, "--inside"], check=True)
    finally:
        if srv:
            srv.kill()
        for ns in (NS, SRV):
            sh("ip netns del " + ns)


def server():
    """Echoes whatever MPTCP clients send, on ports 4433 and 4434, until killed."""
    import threading

    def serve(port):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen()
        while True:
            c, _ = ls.accept()
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    def echo(c):
        while True:
            d = c.recv(4096)
            if not d:
                c.close()
                return
            c.send(d)

    threading.Thread(target=serve, args=(4434,), daemon=True).start()
    serve(4433)


if __name__ == "__main__":
    main()
