#!/bin/sh
# Captures the fuzz seeds of agent/fuzz (probe_packet) and ipc/fuzz (ipc_frames) from a real
# roamd, inside two network namespaces of its own: `roamd reflect` across a veth answers
# probe requests (written by hand to agent/src/probe/wire.rs's format; its answers are
# recorded), and a client on roamd's socket records the frames roamd sends back (hello,
# status, links, explain, subscribe and the updates that follow, an error). Usage (root):
#   agent/fuzz/capture.sh ROAMD_BINARY
set -eu
ROAMD=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
probe_out=$here/corpus/probe_packet
ipc_out=$here/../../ipc/fuzz/corpus/ipc_frames
mkdir -p "$probe_out" "$ipc_out"
A=roamfz-h$$
B=roamfz-s$$
tmp=$(mktemp -d)
ip netns add $A
ip netns add $B
cleanup() {
    kill $pids 2>/dev/null || true
    ip netns del $A
    ip netns del $B
    rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM
ip link add wlan0 netns $A type veth peer name srv0 netns $B
ip -n $A link set lo up
ip -n $B link set lo up
ip -n $A addr add 198.18.0.2/24 dev wlan0
ip -n $B addr add 198.18.0.1/24 dev srv0
ip -n $A link set wlan0 up
ip -n $B link set srv0 up
ip -n $A route add default via 198.18.0.1 dev wlan0
cat >"$tmp/roamd.toml" <<TOML
[probe]
targets = ["198.18.0.1:7777"]
fast_interval_ms = 50
idle_interval_ms = 200
TOML
# A real reflector across the veth; roamd on the handset side.
ip netns exec $B "$ROAMD" reflect --listen 198.18.0.1:7778 2>/dev/null &
pids=$!
ip netns exec $A "$ROAMD" --config "$tmp/roamd.toml" --socket "$tmp/roamd.sock" 2>"$tmp/roamd.log" &
pids="$pids $!"
ip netns exec $A python3 - "$probe_out" "$ipc_out" "$tmp/roamd.sock" <<'PY'
import socket, struct, sys, json, time
probe_out, ipc_out, path = sys.argv[1:]
# The reflector's answers to requests (RMP1, op 1, token, seq: agent/src/probe/wire.rs).
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
for i, (token, seq) in enumerate([(0x1122334455667788, 1), (0xdeadbeef, 2**40), (2**64 - 1, 2**64 - 1)]):
    req = b"RMP1" + bytes([1, 0, 0, 0]) + struct.pack(">QQ", token, seq)
    open(f"{probe_out}/request{i}", "wb").write(req)
    u.sendto(req, ("198.18.0.1", 7778))
    data, _ = u.recvfrom(2048)
    open(f"{probe_out}/reflector_reply{i}", "wb").write(data)
# roamd's frames on its socket.
for _ in range(50):
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        break
    except OSError:
        time.sleep(0.1)
c.settimeout(1)
def frame(m):
    b = json.dumps(m, separators=(",", ":")).encode()
    return struct.pack(">I", len(b)) + b
sent = b""
def ask(m):
    global sent
    f = frame(m)
    sent += f
    c.sendall(f)
def drain(t):
    got = b""
    end = time.time() + t
    while time.time() < end:
        try:
            d = c.recv(65536)
        except socket.timeout:
            continue
        if not d:
            break
        got += d
    return got
ask({"type": "hello", "version": 1})
ask({"type": "status", "id": 1})
ask({"type": "links", "id": 2})
ask({"type": "explain", "id": 3, "app": "com.example.voip"})
ask({"type": "subscribe", "id": 4, "app": "com.example.voip"})
stream = drain(2.0)
open(f"{ipc_out}/roamd_replies", "wb").write(stream)
# Each frame of the stream on its own too.
i = 0
while len(stream) >= 4:
    n = struct.unpack(">I", stream[:4])[0]
    open(f"{ipc_out}/roamd_reply{i}", "wb").write(stream[:4 + n])
    stream = stream[4 + n:]
    i += 1
open(f"{ipc_out}/client_requests", "wb").write(sent)
# A frame roamd refuses: its error reply.
c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c2.connect(path)
c2.settimeout(1)
c2.sendall(struct.pack(">I", 9) + b"not json!")
try:
    open(f"{ipc_out}/roamd_error", "wb").write(c2.recv(65536))
except socket.timeout:
    pass
print("captured", i, "roamd frames")
PY
