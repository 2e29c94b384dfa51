"""A scripted OpenAI-compatible chat server on loopback: the judge's test fake and bench fixture.

It speaks real HTTP, so the real `openai` client (and anything else) talks to it unchanged. The
test decides what it answers (a pluggable responder), how slowly (fixed latency, optionally with
at most `max_concurrency` requests being answered at once), whether it gives
logprobs, and which faults it injects (HTTP 429/500, slow replies, garbage, an empty choice list,
truncated JSON, a dropped connection). It records every request, counts calls and measures how many
requests were in flight at once, so tests can assert on the client's behaviour.

    with ScriptedJudgeServer(PreferenceResponder(preferred={"good"}, others={"bad"})) as server:
        model = OpenAIChatModel("scripted", BackendOptions(base_url=server.base_url))

Run as a program (`python -m tests.support.scripted_server --latency-ms 200`) it serves a constant
verdict until killed; the benchmark uses that to keep the server's CPU out of the client's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "ConstantResponder",
    "Fault",
    "PreferenceResponder",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedJudgeServer",
    "last_user_message",
]

FaultKind = Literal[
    "http_error", "delay", "garbage", "empty_choices", "missing_message", "truncated_json", "drop"
]


@dataclass(frozen=True)
class Reply:
    """What the scripted model says; `top_logprobs`: (token, logprob) pairs for the first token."""

    text: str
    top_logprobs: list[tuple[str, float]] | None = None
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True)
class Fault:
    """One injected failure, built with the class methods; `delay` still answers, late."""

    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    text: str = ""
    message: str = "scripted fault"

    @classmethod
    def http(
        cls, status: int, *, retry_after: float | str | None = None, message: str = ""
    ) -> Fault:
        ra = None if retry_after is None else str(retry_after)
        return cls("http_error", status=status, retry_after=ra, message=message or f"HTTP {status}")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls("delay", delay_s=seconds)

    @classmethod
    def garbage(cls, text: str = "Both responses have merit; I cannot decide.") -> Fault:
        return cls("garbage", text=text)

    @classmethod
    def empty_choices(cls) -> Fault:
        return cls("empty_choices")

    @classmethod
    def missing_message(cls) -> Fault:
        return cls("missing_message")

    @classmethod
    def truncated_json(cls) -> Fault:
        return cls("truncated_json")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering (a crashed or restarted server)."""
        return cls("drop")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    received_at: float
    fault: Fault | None = None
    status: int = 0
    completed_at: float | None = None


def last_user_message(body: Mapping[str, Any]) -> str:
    """The text of the last `user` message (string or list-of-parts content)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
    return ""


def _unit_hash(*parts: object) -> float:
    """A reproducible number in [0, 1) from the parts (no Python hash randomisation)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _as_reply(reply: str | Reply) -> Reply:
    return reply if isinstance(reply, Reply) else Reply(reply)


def _default_text_reply(body: dict[str, Any]) -> str:
    user = last_user_message(body)
    return f"Scripted reply ({len(user)} characters of input considered)."


@dataclass
class Decision:
    slot_a: str
    slot_b: str
    answer: str
    biased: bool


class PreferenceResponder:
    """A judge with a known content preference and a controllable bias for the first slot.

    It knows nothing of the judge's prompt format. It is told the candidate texts and their
    scores (`preferred` texts score 1, `others` 0, or pass a mapping text -> score); in the last
    user message it finds the known texts that occur, and the one occurring first is slot A.
    With probability `position_bias_a` it answers "A" whatever the content; the draw is a hash
    of (seed, slot A text, slot B text), or of the whole message with `bias_key="message"`, so
    reruns give the same answers even when the judge's prompt carries random nonces.

    A verdict request naming one known text is a pointwise question: it gets "Yes" or "No" by
    the text's score (see `score_reply`), never biased by position (there is none).
    A request naming two known texts with `max_tokens <= verdict_max_tokens` gets the letter
    (with first-token logprobs P(answer) = `p_confident` when `logprobs`); with more tokens it gets
    `cot_template` (reasoning, then the letter). Anything else (critiques, revisions) gets
    `text_reply(body)`. A verdict request whose texts it cannot find gets `unknown_reply`, which
    is not a letter: the judge must record it as a failure, not guess.
    """

    def __init__(
        self,
        preferred: Iterable[str] | Mapping[str, float] = (),
        others: Iterable[str] = (),
        *,
        position_bias_a: float = 0.0,
        p_confident: float = 0.9,
        logprobs: bool = True,
        seed: int = 0,
        bias_key: Literal["pair", "message"] = "pair",
        verdict_max_tokens: int = 4,
        cot_template: str = "Weighing both responses against the principle.\nAnswer: {answer}",
        text_reply: Callable[[dict[str, Any]], str | Reply] = _default_text_reply,
        unknown_reply: str = "I cannot find two responses to compare.",
    ) -> None:
        if not 0.0 <= position_bias_a <= 1.0:
            raise ValueError("position_bias_a must be in [0, 1]")
        if not 0.5 <= p_confident < 1.0:
            raise ValueError("p_confident must be in [0.5, 1)")
        if isinstance(preferred, Mapping):
            self.scores: dict[str, float] = {str(k): float(v) for k, v in preferred.items()}
        else:
            self.scores = dict.fromkeys(preferred, 1.0)
        for text in others:
            self.scores.setdefault(text, 0.0)
        self.position_bias_a = position_bias_a
        self.p_confident = p_confident
        self.logprobs = logprobs
        self.seed = seed
        self.bias_key = bias_key
        self.verdict_max_tokens = verdict_max_tokens
        self.cot_template = cot_template
        self.text_reply = text_reply
        self.unknown_reply = unknown_reply
        self._lock = threading.Lock()
        self.decisions: list[Decision] = []

    def find_texts(self, message: str) -> list[str]:
        """The known texts in `message`, in order of first occurrence (a known text inside a
        longer known text's occurrence does not count)."""
        found: list[tuple[int, int, str]] = []
        for text in self.scores:
            if not text:
                continue
            idx = message.find(text)
            while idx >= 0:  # every occurrence: the first may lie inside a longer known text
                found.append((idx, idx + len(text), text))
                idx = message.find(text, idx + 1)
        kept = [
            (start, end, text)
            for start, end, text in found
            if not any(
                o_start <= start and end <= o_end and (o_end - o_start) > (end - start)
                for o_start, o_end, _ in found
            )
        ]
        return list(dict.fromkeys(text for _, _, text in sorted(kept)))

    def find_slots(self, message: str) -> tuple[str, str] | None:
        """The two known texts in `message`, in order of first occurrence; None unless exactly 2."""
        texts = self.find_texts(message)
        return (texts[0], texts[1]) if len(texts) == 2 else None

    def is_biased(self, slot_a: str, slot_b: str, message: str = "") -> bool:
        """Whether this request falls in the `position_bias_a` share that answers A regardless."""
        key: tuple[object, ...] = (
            (self.seed, slot_a, slot_b) if self.bias_key == "pair" else (self.seed, message)
        )
        return _unit_hash(*key) < self.position_bias_a

    def answer_for(self, slot_a: str, slot_b: str, message: str = "") -> tuple[str, bool]:
        """(letter, biased): the letter this judge gives for the ordered pair."""
        if self.is_biased(slot_a, slot_b, message):
            return "A", True
        score_a, score_b = self.scores[slot_a], self.scores[slot_b]
        if score_a == score_b:
            return "A", False  # no content preference: a tie, reported with even logprobs
        return ("A" if score_a > score_b else "B"), False

    def __call__(self, body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        texts = self.find_texts(message)
        if len(texts) == 1 and max_tokens <= self.verdict_max_tokens:
            return self.score_reply(texts[0])
        slots = self.find_slots(message)
        if slots is None:
            if max_tokens <= self.verdict_max_tokens:
                return Reply(self.unknown_reply)
            return _as_reply(self.text_reply(body))
        answer, biased = self.answer_for(slots[0], slots[1], message)
        with self._lock:
            self.decisions.append(Decision(slots[0], slots[1], answer, biased))
        if max_tokens > self.verdict_max_tokens:
            return Reply(self.cot_template.format(answer=answer))
        if not self.logprobs:
            return Reply(answer)
        tie = not biased and self.scores[slots[0]] == self.scores[slots[1]]
        p = 0.5 if tie else self.p_confident
        other = "B" if answer == "A" else "A"
        return Reply(answer, top_logprobs=[(answer, math.log(p)), (other, math.log1p(-p))])

    def score_reply(self, text: str) -> Reply:
        """A pointwise question about one known text: "Yes" for a score of 0.5 or more, with
        P(answer) = `p_confident` in the logprobs (a score of exactly 0.5: even odds)."""
        score = self.scores[text]
        answer = "Yes" if score >= 0.5 else "No"
        with self._lock:
            self.decisions.append(Decision(text, "", answer, False))
        if not self.logprobs:
            return Reply(answer)
        p = 0.5 if score == 0.5 else self.p_confident
        other = "No" if answer == "Yes" else "Yes"
        return Reply(answer, top_logprobs=[(answer, math.log(p)), (other, math.log1p(-p))])


class ConstantResponder:
    """Always the same letter (with logprobs): a fixed-cost judge for throughput measurements."""

    def __init__(self, answer: str = "A", p: float = 0.8, logprobs: bool = True) -> None:
        self.answer, self.p, self.logprobs = answer, p, logprobs

    def __call__(self, body: dict[str, Any]) -> Reply:
        max_tokens = int(body.get("max_tokens") or 16)
        if max_tokens > 4:  # a generation: vary with the seed, as a sampling policy would
            return Reply(f"Scripted text {body.get('seed')}. Answer: {self.answer}")
        if not self.logprobs:
            return Reply(self.answer)
        other = "B" if self.answer == "A" else "A"
        lp = [(self.answer, math.log(self.p)), (other, math.log1p(-self.p))]
        return Reply(self.answer, top_logprobs=lp)


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 64+ clients connect at once; the default backlog of 5 drops SYNs
    allow_reuse_address = True
    owner: ScriptedJudgeServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK stall
    server: _Server
    timeout = 120  # an idle keep-alive connection's thread exits eventually

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the request log is the record

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "owned_by": "scripted"} for m in owner.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error_body("not found", "not_found_error"))

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        record = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        owner._begin(record)
        try:
            self._answer(owner, record)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to tell it
        finally:
            owner._end(record)

    def _answer(self, owner: ScriptedJudgeServer, record: RecordedRequest) -> None:
        if record.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            record.status = 404
            self._send_json(404, _error_body("not found", "not_found_error"))
            return
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            record.status = 400
            self._send_json(400, _error_body("messages must be a list", "invalid_request_error"))
            return
        fault = owner._next_fault(record)
        record.fault = fault
        if owner.latency_s > 0:
            with owner._capacity:
                owner._stop.wait(owner.latency_s)
        if fault is not None and fault.kind == "delay":
            owner._stop.wait(fault.delay_s)
        if fault is not None and fault.kind == "drop":
            record.status = -1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "http_error":
            record.status = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send_json(fault.status, _error_body(fault.message, "scripted_error"), headers)
            return
        if owner.reject_logprobs and (body.get("logprobs") or body.get("top_logprobs")):
            record.status = 400
            message = "logprobs is not supported by this server"
            self._send_json(400, _error_body(message, "invalid_request_error", "logprobs"))
            return
        reply = owner.responder(body)
        if fault is not None and fault.kind == "garbage":
            reply = Reply(fault.text, top_logprobs=[("Both", -0.2), ("I", -1.8)])
        payload = _completion_body(owner, body, reply)
        if fault is not None and fault.kind == "empty_choices":
            payload["choices"] = []
        if fault is not None and fault.kind == "missing_message":
            payload["choices"] = [{"index": 0, "finish_reason": "stop"}]
        record.status = 200
        if fault is not None and fault.kind == "truncated_json":
            data = json.dumps(payload).encode()
            self._send_bytes(200, data[: len(data) // 2], "application/json")
            return
        self._send_json(200, payload)

    def _send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _completion_body(
    owner: ScriptedJudgeServer, body: dict[str, Any], reply: Reply
) -> dict[str, Any]:
    logprobs: dict[str, Any] | None = None
    if body.get("logprobs") and reply.top_logprobs is not None:
        n = int(body.get("top_logprobs") or 0)
        top = sorted(reply.top_logprobs, key=lambda t: -t[1])[:n]
        first = reply.top_logprobs[0] if reply.top_logprobs else (reply.text, 0.0)
        sampled = next((t for t in reply.top_logprobs if t[0] == reply.text), first)
        logprobs = {
            "content": [
                {
                    "token": sampled[0],
                    "logprob": sampled[1],
                    "bytes": list(sampled[0].encode()),
                    "top_logprobs": [
                        {"token": tok, "logprob": lp, "bytes": list(tok.encode())}
                        for tok, lp in top
                    ],
                }
            ],
            "refusal": None,
        }
    prompt_text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
    prompt_tokens = _approx_tokens(prompt_text)
    completion_tokens = _approx_tokens(reply.text)
    return {
        "id": f"chatcmpl-scripted-{owner.calls}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or owner.models[0]),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "logprobs": logprobs,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class ScriptedJudgeServer:
    """The server; a context manager that starts it in a background thread on 127.0.0.1.

    Faults come from a FIFO queue (`enqueue`), one per chat request until it is empty, then from
    `fault_policy(record)` if given. `latency_s` is added to every chat request. `reject_logprobs`
    makes it answer 400 to any request asking for logprobs, as some servers do.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        reject_logprobs: bool = False,
        faults: Iterable[Fault] = (),
        fault_policy: Callable[[RecordedRequest], Fault | None] | None = None,
        models: tuple[str, ...] = ("scripted-judge",),
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrency: int | None = None,
    ) -> None:
        self.responder: Responder = responder or ConstantResponder()
        self.latency_s = latency_s
        # At most this many requests spend their latency at once; the rest wait their turn, as
        # on a model server with a bounded batch. None: no bound.
        self._capacity: contextlib.AbstractContextManager[Any] = (
            threading.BoundedSemaphore(max_concurrency)
            if max_concurrency is not None
            else contextlib.nullcontext()
        )
        self.reject_logprobs = reject_logprobs
        self.fault_policy = fault_policy
        self.models = models
        self._faults: deque[Fault] = deque(faults)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._log: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections: set[socket.socket] = set()
        self._httpd = _Server((host, port), _Handler, bind_and_activate=True)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedJudgeServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="scripted-judge-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any sleeping handler and close every open connection."""
        self._stop.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> ScriptedJudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # scripting
    def enqueue(self, *faults: Fault) -> None:
        """Queue faults for the next chat requests, one each, in order."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # observations
    @property
    def log(self) -> list[RecordedRequest]:
        """Every request so far (a copy), in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat requests so far."""
        return [
            r.body
            for r in self.log
            if r.path.rstrip("/").endswith("/chat/completions") and isinstance(r.body, dict)
        ]

    @property
    def calls(self) -> int:
        """How many POST requests arrived."""
        with self._lock:
            return len(self._log)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def reset(self) -> None:
        """Forget the log, the in-flight peak and any queued faults."""
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._max_in_flight = self._in_flight

    # handler hooks
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _begin(self, record: RecordedRequest) -> None:
        with self._lock:
            self._log.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _end(self, record: RecordedRequest) -> None:
        with self._lock:
            self._in_flight -= 1
            record.completed_at = time.monotonic()

    def _next_fault(self, record: RecordedRequest) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
        return self.fault_policy(record) if self.fault_policy is not None else None


def main(argv: list[str] | None = None) -> None:
    """Serve a constant verdict until killed; prints `READY <base_url>` once listening."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--answer", default="A", choices=["A", "B"])
    parser.add_argument("--no-logprobs", action="store_true")
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="Requests answered at once (a bound)."
    )
    ns = parser.parse_args(argv)
    responder = ConstantResponder(ns.answer, logprobs=not ns.no_logprobs)
    server = ScriptedJudgeServer(
        responder,
        latency_s=ns.latency_ms / 1000.0,
        host=ns.host,
        port=ns.port,
        max_concurrency=ns.max_concurrency,
    )
    server.start()
    sys.stdout.write(f"READY {server.base_url}\n")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
