#!/usr/bin/env python3
"""A roam client in Python through ctypes: sends SIZE bytes of a known pattern over a roam
descriptor while reading the echo, checks every byte, and prints the session's events.

    ROAM_LIB=path/to/libroam.so python3 echo_client.py HOST:PORT OPTIONS_JSON SIZE [RATE]

RATE (bytes per second, default unlimited) paces the writes. The descriptor is a plain socket
to Python: `socket.socket(fileno=fd)` works, here it is used raw with os.read/os.write and
select.poll, as any event loop would.
"""
import ctypes
import errno
import json
import os
import select
import socket
import sys
import time


def load(path):
    lib = ctypes.CDLL(path, use_errno=True)
    lib.roam_connect.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.roam_connect.restype = ctypes.c_int
    lib.roam_events_fd.argtypes = [ctypes.c_int]
    lib.roam_events_fd.restype = ctypes.c_int
    lib.roam_paths.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    lib.roam_paths.restype = ctypes.c_int
    lib.roam_last_error.argtypes = []
    lib.roam_last_error.restype = ctypes.c_char_p
    return lib


def pattern(start, n):
    """Bytes start..start+n of the stream: a counter mixed so no short period repeats."""
    return bytes(((i * 2654435761) >> 24) & 0xFF for i in range(start, start + n))


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    target, options, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    lib = load(os.environ.get("ROAM_LIB", "libroam.so"))

    fd = lib.roam_connect(target.encode(), options.encode())
    if fd < 0:
        e = ctypes.get_errno()
        print(f"connect failed (errno {e}: {os.strerror(e)}): "
              f"{lib.roam_last_error().decode()}", file=sys.stderr)
        return 1
    ev = lib.roam_events_fd(fd)
    if ev < 0:
        print(f"events: {lib.roam_last_error().decode()}", file=sys.stderr)
        return 1
    os.set_blocking(fd, False)
    os.set_blocking(ev, False)

    stream = pattern(0, size)
    chunk = 16384
    sent = received = 0
    shut = False
    start = time.monotonic()
    poller = select.poll()
    poller.register(ev, select.POLLIN)
    events = b""
    while received < size:
        allowed = size if rate <= 0 else min(size, int((time.monotonic() - start) * rate) + chunk)
        want = select.POLLIN | (select.POLLOUT if sent < allowed else 0)
        poller.register(fd, want)
        for f, revents in poller.poll(5):
            if f == ev:
                data = os.read(ev, 65536)
                events += data
                while b"\n" in events:
                    line, events = events.split(b"\n", 1)
                    print("event", line.decode(), flush=True)
                if not data:
                    poller.unregister(ev)
                continue
            if revents & (select.POLLERR | select.POLLNVAL):
                print(f"descriptor error: revents {revents}", file=sys.stderr)
                return 1
            if revents & select.POLLOUT and sent < allowed:
                n = min(chunk, allowed - sent)
                try:
                    sent += os.write(fd, stream[sent:sent + n])
                except BlockingIOError:
                    pass
                if sent >= size and not shut:
                    # End our stream (the server echoes to the end, then ends its own).
                    s = socket.socket(fileno=os.dup(fd))
                    s.shutdown(socket.SHUT_WR)
                    s.close()
                    shut = True
            if revents & (select.POLLIN | select.POLLHUP):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    print(f"early end of stream at {received} of {size}", file=sys.stderr)
                    return 1
                if data != stream[received:received + len(data)]:
                    print(f"corrupted echo at byte {received}", file=sys.stderr)
                    return 1
                before = received
                received += len(data)
                if before >> 20 != received >> 20:
                    print(f"received {received}", flush=True)
    buf = ctypes.create_string_buffer(8192)
    if lib.roam_paths(fd, buf, len(buf)) < 0:
        print(f"paths: {lib.roam_last_error().decode()}", file=sys.stderr)
        return 1
    print("paths", buf.value.decode(), flush=True)
    os.close(fd)
    os.close(ev)
    print(f"ok {received} bytes echoed intact", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
