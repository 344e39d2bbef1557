"""A WHEP viewer on aiortc (an independent WebRTC stack): POSTs a receive-only offer to a
Switchboard WHEP endpoint, decodes the video it gets, prints one JSON line with the frames decoded
and their size, then DELETEs the session.

Usage: whep_viewer.py URL [MIN_FRAMES] [TIMEOUT_S]
"""

import asyncio
import json
import sys
import urllib.request

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription


def http(method, url, body=None):
    headers = {"Content-Type": "application/sdp"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Location"), response.read().decode()


async def main(url, min_frames, timeout):
    # No public STUN server: everything stays on this machine.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    decoded = {"frames": 0, "width": 0, "height": 0, "audio_frames": 0}

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                if track.kind == "video":
                    decoded["frames"] += 1
                    decoded["width"], decoded["height"] = frame.width, frame.height
                else:
                    decoded["audio_frames"] += 1

        asyncio.ensure_future(consume())

    # aiortc gathers all its candidates here (it does not trickle).
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, location, answer = await loop.run_in_executor(
        None, http, "POST", url, pc.localDescription.sdp.encode()
    )
    if status != 201:
        raise SystemExit(f"WHEP answered {status}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = loop.time() + timeout
    while decoded["frames"] < min_frames and loop.time() < deadline:
        await asyncio.sleep(0.1)
    decoded["location"] = location
    decoded["state"] = pc.connectionState
    base = url.split("/whep/")[0]
    decoded["delete"] = (await loop.run_in_executor(None, http, "DELETE", base + location))[0]
    await pc.close()
    print(json.dumps(decoded), flush=True)


if __name__ == "__main__":
    url = sys.argv[1]
    min_frames = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    asyncio.run(main(url, min_frames, timeout))
