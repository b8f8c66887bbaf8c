#!/bin/sh
# Captures dnsmasq's answers to the SDK's query format inside a namespace of its own.
set -e
NS=roamfz-dns$$
ip netns add $NS
trap 'kill $PID 2>/dev/null; ip netns del $NS' EXIT
ip netns exec $NS ip link set lo up
ip netns exec $NS dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --pid-file= --user=root \
  --bind-interfaces --port=53 --cache-size=0 --local=/roam.test/ --listen-address=127.0.0.1 \
  --host-record=api.roam.test,198.18.0.10,198.18.1.10,2001:db8::10 --host-record=v4only.roam.test,198.18.0.11 \
  --cname=www.roam.test,api.roam.test &
PID=$!
sleep 0.5
ip netns exec $NS python3 - "$1" <<'PY'
import socket, struct, sys, os
out = sys.argv[1]
def q(id, name, t):
    b = struct.pack(">HHHHHH", id, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        b += bytes([len(l)]) + l.encode()
    return b + b"\0" + struct.pack(">HH", t, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i, (name, t, tag) in enumerate([
    ("api.roam.test", 1, "a"), ("api.roam.test", 28, "aaaa"),
    ("v4only.roam.test", 28, "nodata"), ("nope.roam.test", 1, "nxdomain"),
    ("www.roam.test", 1, "cname_a"), ("www.roam.test", 28, "cname_aaaa"),
    ("API.ROAM.TEST", 1, "a_upper"),
]):
    s.sendto(q(0x1234 + i, name, t), ("127.0.0.1", 53))
    data, _ = s.recvfrom(4096)
    open(os.path.join(out, "dnsmasq_" + tag), "wb").write(data)
    print(tag, len(data))
PY
