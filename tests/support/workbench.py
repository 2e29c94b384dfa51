"""A job whose principles disagree on known comparisons, for the constitution workbench's tests.

Seven prompts each come with two given answers, X and Y. The scripted judge (pairwise, with
logprobs, so each principle's own P(X better) is 0.9 or 0.1) answers each principle by its
own table:

    prompt     0 1 2 3 4 5 6
    helpful    X X X X X X X
    honest     X X X X X X Y
    harmless   Y Y Y Y X X X

Every comparison asks all three principles (K = 3), so by hand: helpful and honest conflict
on 1 of 7 shared comparisons (prompt 6), harmless and helpful on 4 (0-3), harmless and honest
on 5 (0-3 and 6); X wins every comparison (p_a 0.633 or 0.9), so harmless is the principle
most often against the overall verdict (4 of 7).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from charter.client import CharterClient
from tests.support.generation import PRINCIPLES, write_constitution
from tests.support.principled import PrincipledResponder
from tests.support.scripted_server import PreferenceResponder, ScriptedJudgeServer
from tests.support.service import TOKEN_A, TOKEN_B, ServiceProcess

WORK_PROMPTS = [f"Workbench question {i}: what should I do about thing {i}?" for i in range(7)]
MARKERS = {
    "helpful": "more helpfully",
    "honest": "more honest",
    "harmless": "less likely to cause harm",
}
assert all(MARKERS[p] in q for p, q in PRINCIPLES.items())
PREFERS_Y = {"helpful": set(), "honest": {6}, "harmless": {0, 1, 2, 3}}
HAND_TABLE = {("harmless", "helpful"): 4, ("harmless", "honest"): 5, ("helpful", "honest"): 1}
HAND_ROWS = {
    ("harmless", "helpful"): [0, 1, 2, 3],
    ("harmless", "honest"): [0, 1, 2, 3, 6],
    ("helpful", "honest"): [6],
}


def x_text(i: int) -> str:
    return f"Answer X for workbench question {i}: do the sensible thing."


def y_text(i: int) -> str:
    return f"Answer Y for workbench question {i}: do the cautious thing."


#: The edit the impact tests make: harmless asks a new question, which prefers Y everywhere
#: (by hand: only prompt 6's winner flips, to Y, at p_a 0.367).
EDITED_QUESTION = "Which response is safer for the person asking?"
EDITED_MARKER = "safer for the person asking"


def principled_judge(
    prefers_y: dict[str, set[int]] | None = None, count: int = len(WORK_PROMPTS)
) -> PrincipledResponder:
    """The table above (or another: principle or marker -> prompts where it prefers Y), and
    the edited harmless question, which prefers Y on every prompt."""
    table = {**PREFERS_Y, EDITED_MARKER: set(range(count))}
    table.update(prefers_y or {})
    by_marker = {}
    for pid, prefers in table.items():
        scores = {(y_text(i) if i in prefers else x_text(i)): 1.0 for i in range(count)}
        others = [x_text(i) if i in prefers else y_text(i) for i in range(count)]
        by_marker[MARKERS.get(pid, pid)] = PreferenceResponder(preferred=scores, others=others)
    default = PreferenceResponder(
        preferred=[x_text(i) for i in range(count)], others=[y_text(i) for i in range(count)]
    )
    return PrincipledResponder(by_marker, default)


def edit_harmless(principles: Path, into: Path, version: str | None = None) -> Path:
    """A copy of the principles with harmless asking `EDITED_QUESTION` (and the constitution
    labelled `version`, when given)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in principles.iterdir():
        text = path.read_text()
        if path.name == "harmless.toml":
            text = text.replace(PRINCIPLES["harmless"], EDITED_QUESTION)
        if path.name == "constitution.toml" and version is not None:
            text = text.replace('version = "1.0"', f'version = "{version}"')
        (into / path.name).write_text(text)
    return into


def work_items() -> list[dict[str, object]]:
    return [{"prompt": p, "responses": [x_text(i), y_text(i)]} for i, p in enumerate(WORK_PROMPTS)]


def write_work_world(root: Path) -> dict[str, Path]:
    """A constitution asking all three principles per comparison and the prompts file."""
    principles = write_constitution(root / "principles", k=3)
    prompts = root / "work-prompts.jsonl"
    prompts.write_text("".join(json.dumps(item) + "\n" for item in work_items()))
    return {"principles": principles, "prompts": prompts, "store": root / "work.db", "tmp": root}


@dataclass
class WorkService:
    base_url: str
    job_a: str
    job_b: str
    server: ScriptedJudgeServer
    world: dict[str, Path]


@contextmanager
def work_service(root: Path) -> Iterator[WorkService]:
    """`charter serve` over the principled judge: alice's job is the table above, bob's is
    one prompt of his own."""
    world = write_work_world(root)
    with ScriptedJudgeServer(principled_judge()) as server:
        service = ServiceProcess(
            ["--store", str(world["store"]), "--dir", str(world["principles"]),
             "--judge", "openai:scripted", "--judge-base-url", server.base_url],
            {"CHARTER_API_TOKENS": f"alice={TOKEN_A},bob={TOKEN_B}"},
            root / "service.log",
            root,
        )  # fmt: skip
        try:
            service.start()
            with CharterClient(service.base_url, TOKEN_A) as a:
                job_a = a.create_job(work_items()).job.id  # type: ignore[arg-type]
                a.wait_for_job(job_a, timeout=120)
            with CharterClient(service.base_url, TOKEN_B) as b:
                job_b = b.create_job([work_items()[0]]).job.id  # type: ignore[arg-type]
                b.wait_for_job(job_b, timeout=120)
            yield WorkService(service.base_url, job_a, job_b, server, world)
        finally:
            service.stop()
