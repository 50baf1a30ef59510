#!/usr/bin/env python3
"""A TCP proxy on loopback that adds network latency: every chunk of bytes,
either way, is delivered HALF_RTT later than it arrived, in order, without
slowing the stream down (a delay line, not a sleep per chunk). It puts a
loopback emulator "far away", like a real cloud endpoint, so that
benches/cloud.sh (LATENCY_MS=N) can compare clients whose cost is round
trips. Standard library only.

Usage: latency_proxy.py LISTEN_PORT TARGET_PORT RTT_MS
"""
import asyncio
import sys
import time


async def pipe(reader, writer, half):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + half, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except ConnectionError:
        pass


async def main():
    listen, target, rtt_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    half = rtt_ms / 2000.0

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pipe(client_r, server_w, half), pipe(server_r, client_w, half)
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
