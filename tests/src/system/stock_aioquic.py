"""handover-bench's stock QUIC peer: an aioquic server (pip aioquic 1.7.2) that relays the first
stream a client opens to its standard input and output, as socat does for TCP. The harness
writes what the server sends into stdin and reads what it receives from stdout; stderr says
"ready" once the server listens. Nothing here is roam's: migration, acknowledgement and
retransmission are aioquic's own.

Usage: python3 stock_aioquic.py --host ADDR --port N --cert PEM --key PEM --alpn P
"""

import argparse
import asyncio
import sys

from aioquic.asyncio import serve
from aioquic.quic.configuration import QuicConfiguration


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--alpn", required=True)
    p.add_argument("--idle-timeout", type=float, default=60.0)
    a = p.parse_args()

    cfg = QuicConfiguration(
        is_client=False, alpn_protocols=[a.alpn], idle_timeout=a.idle_timeout
    )
    cfg.load_cert_chain(a.cert, a.key)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer
    )
    out = sys.stdout.buffer
    tasks = set()
    taken = False

    async def to_stdout(reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            out.write(data)
            out.flush()

    async def from_stdin(writer: asyncio.StreamWriter) -> None:
        while True:
            data = await stdin.read(65536)
            if not data:
                return
            writer.write(data)

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One session: the first stream is the one relayed.
        nonlocal taken
        if taken:
            return
        taken = True
        for coro in (to_stdout(reader), from_stdin(writer)):
            t = asyncio.ensure_future(coro)
            tasks.add(t)

    await serve(a.host, a.port, configuration=cfg, stream_handler=on_stream)
    print("ready", file=sys.stderr, flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
