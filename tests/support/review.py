"""A review world for the pages' tests: `charter serve` on loopback, the scripted judge, and
two tokens' jobs, one of whose texts carry XSS payloads.

Token A is declared as `alice=TOKEN_A` and token B as `bob=TOKEN_B`, so labels name people.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from charter.client import CharterClient
from tests.support.generation import PROMPTS, bad, good, responder, revised, write_constitution
from tests.support.scripted_server import PreferenceResponder, ScriptedJudgeServer
from tests.support.service import TOKEN_A, TOKEN_B, ServiceProcess

XSS_SCRIPT = "<script>window.__xss = 1; alert('script ran')</script>"
XSS_ONERROR = '<img src="x" onerror="window.__xss = 2; alert(2)">'
XSS_LINK = '<a id="js-link" href="javascript:window.__xss = 3">click me</a>'
XSS_FORGED = (
    '</pre></section><section><h2>Chosen</h2><pre class="text chosen" id="forged">'
    "I am the real chosen</pre></section>"
)
PAYLOADS = [XSS_SCRIPT, XSS_ONERROR, XSS_LINK, XSS_FORGED]
B_PROMPTS = [f"Bob's private question {i}?" for i in range(3)]
XSS_PROMPTS = [f"Write an HTML example, number {i}, for my web page." for i in range(len(PAYLOADS))]


def xss_chosen(i: int) -> str:
    """The text the judge prefers for XSS prompt `i`: an answer carrying payload `i`."""
    return f"Here is a careful example, number {i}, written out in full: {PAYLOADS[i]}"


def xss_rejected(i: int) -> str:
    return f"I would rather not write example {i} today, sorry about that."


def _responder(prompts: list[str]) -> PreferenceResponder:
    """The scripted world's judge and policy, also preferring each XSS answer to its refusal."""
    base = responder(prompts)
    scores = {revised(p): 2.0 for p in prompts} | {good(p): 1.0 for p in prompts}
    scores |= {xss_chosen(i): 1.0 for i in range(len(PAYLOADS))}
    others = [bad(p) for p in prompts] + [xss_rejected(i) for i in range(len(PAYLOADS))]
    return PreferenceResponder(preferred=scores, others=others, text_reply=base.text_reply)


@dataclass
class ReviewWorld:
    base_url: str
    job_a: str
    job_b: str
    store: Path
    server: ScriptedJudgeServer


@contextmanager
def sign_in(base_url: str, token: str) -> Iterator[httpx.Client]:
    """An httpx client with a page session, as a browser would have after signing in."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        response = client.post("/pages/sign-in", data={"token": token, "next": "/pages/jobs"})
        assert response.status_code == 303, response.text
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@contextmanager
def review_world(root: Path) -> Iterator[ReviewWorld]:
    principles = write_constitution(root / "principles")
    store = root / "review.db"
    prompts = PROMPTS[:6]
    with ScriptedJudgeServer(_responder(prompts + B_PROMPTS)) as server:
        models = ["--judge", "openai:scripted", "--policy", "openai:scripted"]
        models += ["--judge-base-url", server.base_url, "--policy-base-url", server.base_url]
        service = ServiceProcess(
            ["--store", str(store), "--dir", str(principles), *models],
            {"CHARTER_API_TOKENS": f"alice={TOKEN_A},bob={TOKEN_B}"},
            root / "service.log",
            root,
        )
        try:
            service.start()
            with CharterClient(service.base_url, TOKEN_A) as a:
                items: list[str | dict[str, object]] = list(prompts)
                items += [{"prompt": p, "responses": [xss_rejected(i), xss_chosen(i)]}
                          for i, p in enumerate(XSS_PROMPTS)]  # fmt: skip
                job_a = a.create_job(items).job.id
                a.wait_for_job(job_a, timeout=120)
            with CharterClient(service.base_url, TOKEN_B) as b:
                job_b = b.create_job(B_PROMPTS).job.id
                b.wait_for_job(job_b, timeout=120)
            yield ReviewWorld(service.base_url, job_a, job_b, store, server)
        finally:
            service.stop()
            time.sleep(0)
