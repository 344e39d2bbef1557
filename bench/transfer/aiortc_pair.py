"""Anchor: two aiortc peers in one process move SIZE_MB over one data channel.

The sender writes 16 KiB binary messages, keeping bufferedAmount under 1 MiB (refilled on
bufferedamountlow); the clock runs from the channel opening to the receiver holding every byte.
Prints `aiortc MB/s: X`.
"""

import asyncio
import os
import time

from aiortc import RTCPeerConnection

SIZE = int(os.environ.get("SIZE_MB", "100")) * 1000 * 1000
CHUNK = 16 * 1024
HIGH = 1024 * 1024


async def main():
    a = RTCPeerConnection()
    b = RTCPeerConnection()
    channel = a.createDataChannel("bytes")
    done = asyncio.get_running_loop().create_future()
    received = 0
    started = None

    @b.on("datachannel")
    def on_datachannel(incoming):
        @incoming.on("message")
        def on_message(message):
            nonlocal received
            received += len(message)
            if received >= SIZE and not done.done():
                done.set_result(time.perf_counter())

    payload = bytes(CHUNK)
    sent = 0

    def fill():
        nonlocal sent
        while sent < SIZE and channel.bufferedAmount < HIGH:
            n = min(CHUNK, SIZE - sent)
            channel.send(payload[:n])
            sent += n

    channel.bufferedAmountLowThreshold = HIGH // 2
    channel.on("bufferedamountlow", fill)

    @channel.on("open")
    def on_open():
        nonlocal started
        started = time.perf_counter()
        fill()

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    finished = await asyncio.wait_for(done, timeout=600)
    print(f"aiortc MB/s: {SIZE / (finished - started) / 1e6:.1f}", flush=True)
    await a.close()
    await b.close()


asyncio.run(main())
