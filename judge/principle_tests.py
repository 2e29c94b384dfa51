"""`charter principles test`: each principle's own examples, judged under that principle alone.

A principle file may carry `[[examples]]`: a prompt, a `better` and a `worse` response, and
optionally what its `applies` question should answer for that prompt. This is CI for a
constitution: every example is compared under its principle alone, with the protocol the judge
would use (pairwise: both orders; pointwise: each response scored), and every stated `applies`
is asked. An example passes when the judge decides for `better` (beyond the tie margin) and, if
it states `applies`, the judge's answer agrees. With a store the calls are remembered
(`charter.call_cache`): after editing one principle a re-run asks only what that edit changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, computed_field

from charter.constitution import Constitution, Example, Principle

from .applicability import ask_applies
from .backends.base import ChatModel
from .compare import compare
from .config import DEFAULT_CONFIG, JudgeConfig, Protocol
from .prompts import RANDOM_NONCES, NonceSource


class ExampleOutcome(BaseModel):
    """One example under its principle: the verdict, and the `applies` answer if stated."""

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    index: int = Field(description="1-based, in file order.")
    prompt: str
    p_better: float | None = Field(description="P(better is better); None: no verdict.")
    decided_better: bool = Field(description="The judge chose `better` beyond the tie margin.")
    position_consistent: bool | None = None
    applies_expected: bool | None = None
    applies_p: float | None = None
    applies_right: bool | None = Field(
        default=None,
        description="P(Yes) on the right side of the threshold (None: the example states none).",
    )
    error: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.decided_better and self.applies_right is not False


class PrincipleOutcome(BaseModel):
    """A principle's examples: how many passed, and whether that is within `max_fail`."""

    model_config = ConfigDict(extra="ignore")

    principle_id: str
    principle_digest: str
    examples: list[ExampleOutcome]
    max_fail: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> int:
        return sum(e.passed for e in self.examples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return len(self.examples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_p_better(self) -> float | None:
        ps = [e.p_better for e in self.examples if e.p_better is not None]
        return sum(ps) / len(ps) if ps else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def position_consistency(self) -> float | None:
        """Pairwise: the share of examples whose two orders named the same response."""
        known = [e.position_consistent for e in self.examples if e.position_consistent is not None]
        return sum(known) / len(known) if known else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def applies_right(self) -> int:
        return sum(e.applies_right is True for e in self.examples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def applies_total(self) -> int:
        return sum(e.applies_expected is not None for e in self.examples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """At most `max_fail` (a fraction) of its examples failed."""
        return self.total == 0 or (self.total - self.passed) / self.total <= self.max_fail + 1e-9


class PrinciplesTestReport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    judge: str
    protocol: Protocol
    constitution_digest: str
    max_fail: float
    principles: list[PrincipleOutcome]
    calls_made: int | None = None
    calls_reused: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.principles)


def alone(constitution: Constitution, principle: Principle) -> Constitution:
    """A constitution of this one principle, with the original's defaults."""
    return constitution.model_copy(update={"principles": (principle,)})


async def _judge_example(
    model: ChatModel,
    constitution: Constitution,
    principle: Principle,
    index: int,
    example: Example,
    config: JudgeConfig,
    nonces: NonceSource,
) -> ExampleOutcome:
    if config.few_shot:  # never shown the example it is tested on
        others = tuple(e for n, e in enumerate(principle.examples, start=1) if n != index)
        principle = principle.model_copy(update={"examples": others})
    single = alone(constitution, principle)
    verdict_task = compare(
        model, single, example.prompt, example.better, example.worse, config, nonces=nonces
    )
    if example.applies is not None and principle.applies is not None:
        comparison, applicability = await asyncio.gather(
            verdict_task,
            ask_applies(
                model, principle, example.prompt, parse_retries=config.parse_retries, nonces=nonces
            ),
        )
        applies_p = applicability.p_yes
        applies_error = applicability.error
    else:
        comparison, applies_p, applies_error = await verdict_task, None, None
    expected = example.applies if principle.applies is not None else None
    errors = [j.error for j in comparison.judgments if j.error]
    errors += [j.error for s in comparison.scores for j in s.judgments if j.error]
    if applies_error:
        errors.append(f"applies: {applies_error}")
    return ExampleOutcome(
        index=index,
        prompt=example.prompt,
        p_better=comparison.p_a,
        decided_better=comparison.winner == "a",
        position_consistent=comparison.position_consistent,
        applies_expected=expected,
        applies_p=applies_p,
        applies_right=None
        if expected is None
        else applies_p is not None and (applies_p >= config.applies_threshold) == expected,
        error=errors[0] if errors else None,
    )


async def run_principle_tests(
    model: ChatModel,
    constitution: Constitution,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    only: Sequence[str] = (),
    max_fail: float = 0.0,
    nonces: NonceSource = RANDOM_NONCES,
) -> PrinciplesTestReport:
    """Judge every example of every enabled principle (or of the ids in `only`)."""
    if not 0.0 <= max_fail <= 1.0:
        raise ValueError(f"max_fail must be a fraction in [0, 1], got {max_fail}")
    unknown = sorted(set(only) - {p.id for p in constitution.principles})
    if unknown:
        raise ValueError(f"no principle {', '.join(map(repr, unknown))} in this constitution")
    chosen = [p for p in constitution.enabled if not only or p.id in only]
    # The principle alone: K=1 and no selection among others.
    config = config.model_copy(update={"principles": 1, "selection": "random"})
    outcomes = await asyncio.gather(
        *(
            asyncio.gather(
                *(
                    _judge_example(model, constitution, p, n, example, config, nonces)
                    for n, example in enumerate(p.examples, start=1)
                )
            )
            for p in chosen
        )
    )
    return PrinciplesTestReport(
        judge=model.spec,
        protocol=config.protocol_for(model.spec),
        constitution_digest=constitution.digest,
        max_fail=max_fail,
        principles=[
            PrincipleOutcome(
                principle_id=p.id,
                principle_digest=p.digest,
                examples=list(results),
                max_fail=max_fail,
            )
            for p, results in zip(chosen, outcomes, strict=True)
        ],
    )
