"""An OpenAI-compatible judge that answers at once, on as little CPU as it can: the fixture for
measuring a client's ceiling, where the scripted server's threads would be the bottleneck.

It answers what `tests.support.scripted_server.ConstantResponder` answers (the letter "A" with
first-token logprobs P = 0.8 for a verdict request, i.e. `max_tokens` <= 4; otherwise a text
that varies with the request's seed, as a sampling policy's would), over HTTP/1.1 keep-alive,
from one asyncio protocol (uvloop where installed). Run it as a program; it prints
`READY <base_url>` once listening and serves until killed:

    .venv/bin/python benchmarks/instant_server.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
from typing import Any

LOGPROBS = {
    "content": [
        {
            "token": "A",
            "logprob": math.log(0.8),
            "bytes": [65],
            "top_logprobs": [
                {"token": "A", "logprob": math.log(0.8), "bytes": [65]},
                {"token": "B", "logprob": math.log(0.2), "bytes": [66]},
            ],
        }
    ],
    "refusal": None,
}


def reply(body: dict[str, Any]) -> bytes:
    verdict = int(body.get("max_tokens") or 16) <= 4
    text = "A" if verdict else f"Scripted text {body.get('seed')}. Answer: A"
    payload = {
        "id": "chatcmpl-instant",
        "object": "chat.completion",
        "created": 0,
        "model": str(body.get("model") or "instant"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": LOGPROBS if verdict and body.get("logprobs") else None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
    }
    data = json.dumps(payload).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + data


class Judge(asyncio.Protocol):
    """Parses requests by Content-Length off one connection and answers each at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transports are not asyncio.Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            raw = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {}
            self.transport.write(reply(body))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Judge, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY http://{host}:{bound}/v1\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    ns = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ns.host, ns.port))


if __name__ == "__main__":
    main()
