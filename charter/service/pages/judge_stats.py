"""Per-principle figures of a job's judge, from a bounded, evenly spread sample of its prompts.

A stored prompt result holds every judgment with its messages, so reading all of a large
job's results on each page view would take seconds; an even sample of at most `SAMPLE`
prompts keeps the chart's cost fixed and says how many prompts it is from.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from charter.jobs.conflicts import done_results
from charter.jobs.store import JOB_PROMPTS

SAMPLE = 200


@dataclass
class PrincipleStats:
    principle: str
    verdicts: int = 0
    swap_tests: int = 0
    consistent: int = 0
    agreeing: int = 0  # verdicts naming the same response as the comparison's overall winner

    @property
    def consistency(self) -> float | None:
        return self.consistent / self.swap_tests if self.swap_tests else None

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.verdicts if self.verdicts else None


@dataclass
class JudgeStats:
    principles: list[PrincipleStats]
    prompts_read: int
    prompts_done: int


def judge_stats(db: sqlite_utils.Database, job_id: str, sample: int = SAMPLE) -> JudgeStats:
    done = db.execute(
        f"SELECT COUNT(*) FROM {JOB_PROMPTS} WHERE job_id = ? AND status = 'done'", [job_id]
    ).fetchone()[0]
    by_id: dict[str, PrincipleStats] = {}
    read = 0
    for _, result in done_results(db, job_id, sample):
        read += 1
        for comparison in result.get("comparisons", []) + result.get("verifications", []):
            winner = comparison.get("winner")
            for verdict in comparison.get("principles", []):
                stats = by_id.setdefault(
                    str(verdict.get("principle_id")), PrincipleStats(str(verdict["principle_id"]))
                )
                p_a = verdict.get("p_a")
                if p_a is not None and winner in ("a", "b"):
                    stats.verdicts += 1
                    stats.agreeing += (p_a > 0.5) == (winner == "a")
                if verdict.get("consistent") is not None:
                    stats.swap_tests += 1
                    stats.consistent += bool(verdict["consistent"])
    return JudgeStats(sorted(by_id.values(), key=lambda s: s.principle), read, int(done))
