"""The two ways a job makes a prompt's rows: `compare` ranks candidates with the judge (RL-CAI);
`revise` runs critique -> revision chains on them and has the judge check each revision
against its original (SL-CAI). Candidates are given or sampled from the policy, then checked
against the quality gates first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from charter.calibrations import CalibrationFit
from charter.jobs.results import first_error
from charter.jobs.spec import JobSpec
from charter.jobs.store import JobRecord, Preference
from charter.judge import compare, critique_and_revise, rank
from charter.judge.applicability import relevance_for
from charter.judge.backends.base import ChatModel, GenerationRequest
from charter.judge.critique import RevisionChain
from charter.judge.prompts import KeyedNonces
from charter.judge.quality import Flaw, answer_flaw
from charter.judge.rank import calibrated
from charter.judge.results import Comparison, Provenance, Relevance
from charter.prompt_files import PromptRecord


class Candidate(BaseModel):
    """A response to rank or revise, with why its generation stopped and any flaw found."""

    text: str
    finish_reason: str | None = None
    flaw: Flaw | None = None


async def sample_candidates(
    policy: ChatModel, record: PromptRecord, spec: JobSpec
) -> list[Candidate]:
    """`spec.n` responses from the policy, sample i seeded with `seed + i` (reproducible)."""
    replies = await asyncio.gather(
        *(
            policy.generate(
                GenerationRequest(
                    messages=record.messages,
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    seed=spec.judge_config.seed + i,
                    frequency_penalty=spec.frequency_penalty,
                )
            )
            for i in range(spec.n)
        )
    )
    return [Candidate(text=r.text.strip(), finish_reason=r.finish_reason) for r in replies]


def checked(candidates: list[Candidate], prompt: str) -> list[Candidate]:
    """The distinct candidates, each with its quality flaw (if any) recorded."""
    seen: set[str] = set()
    result: list[Candidate] = []
    for candidate in candidates:
        if candidate.text in seen:
            continue
        seen.add(candidate.text)
        flaw = answer_flaw(candidate.text, prompt=prompt, finish_reason=candidate.finish_reason)
        result.append(candidate.model_copy(update={"flaw": flaw}))
    return result


async def process_prompt(
    job: JobRecord,
    position: int,
    record: PromptRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    nonces: KeyedNonces,
    calibration: CalibrationFit | None = None,
) -> tuple[list[Preference], dict[str, Any], str | None]:
    """One prompt's rows, its stored result, and the error that failed it (None: it did not)."""
    spec = job.spec
    if record.responses is not None:
        candidates = [Candidate(text=text) for text in record.responses]
    else:
        if policy is None:
            raise ValueError("no candidate responses given and no policy model to sample them")
        candidates = await sample_candidates(policy, record, spec)
    candidates = checked(candidates, record.text)
    common = {
        "job_id": job.id,
        "position": position,
        "prompt_key": record.key,
        "prompt": record.model_dump(mode="json")["prompt"],
        "policy": spec.policy if record.responses is None else "given",
        **Provenance.of(job.constitution, spec.judge).fields(),
    }
    judging = _Judging(judge, job, nonces, calibration)
    if spec.mode == "compare":
        return await _compare(judging, record, candidates, common)
    return await _revise(judging, record, candidates, common)


@dataclass
class _Judging:
    """What every judge call of one prompt needs."""

    judge: ChatModel
    job: JobRecord
    nonces: KeyedNonces
    calibration: CalibrationFit | None
    relevance: Relevance | None = None

    @property
    def calibration_id(self) -> str | None:
        return self.calibration.record.id if self.calibration else None


async def _compare(
    judging: _Judging, record: PromptRecord, candidates: list[Candidate], common: dict[str, Any]
) -> tuple[list[Preference], dict[str, Any], str | None]:
    """Rank the candidates (the flawless ones, unless the job ranks flawed ones too)."""
    spec = judging.job.spec
    ranked = [  # an empty text is nothing to rank, even on request
        c
        for c in candidates
        if c.flaw is None or (spec.quality.rank_flawed_candidates and c.flaw != "empty")
    ]
    flawed = {c.text for c in candidates if c.flaw is not None}
    listed = {"candidates": [c.model_dump(mode="json") for c in candidates]}
    if len(ranked) < 2:
        return [], {**listed, "skipped": "fewer than two usable candidates"}, None
    ranking = await rank(
        judging.judge,
        judging.job.constitution,
        record.text,
        [c.text for c in ranked],
        spec.judge_config,
        strategy=spec.pairs,
        calibration=judging.calibration.record.calibration if judging.calibration else None,
        calibrate_only=judging.calibration.only if judging.calibration else None,
        nonces=judging.nonces,
    )
    result = {**listed, **ranking.model_dump(mode="json")}
    if ranking.failed_comparisons == len(ranking.comparisons):
        return [], result, f"every comparison failed: {first_error(result)}"
    preferences = [
        Preference(
            **common,
            chosen=pair.chosen,
            rejected=pair.rejected,
            source="comparison",
            p_chosen=pair.p_chosen,
            p_chosen_raw=pair.p_chosen if pair.p_chosen_raw is None else pair.p_chosen_raw,
            calibration=judging.calibration_id if pair.p_chosen_raw is not None else None,
            protocol=ranking.protocol,
            margin=pair.margin,
            position_consistent=pair.position_consistent,
            principles=pair.principle_ids,
            applicable=ranking.relevance.applied if ranking.relevance else None,
        )
        for pair in ranking.pairs
        if pair.chosen not in flawed
    ]
    return preferences, result, None


async def _revise(
    judging: _Judging, record: PromptRecord, candidates: list[Candidate], common: dict[str, Any]
) -> tuple[list[Preference], dict[str, Any], str | None]:
    """Critique and revise every candidate; keep the revisions the judge prefers (if asked)."""
    job = judging.job
    originals = [c.text for c in candidates if c.flaw != "empty"]
    # Asked once for the prompt: every chain and every check shares the answers.
    judging.relevance = await relevance_for(
        judging.judge,
        job.constitution,
        record.text,
        job.spec.judge_config,
        None,
        nonces=judging.nonces,
    )
    chains = await asyncio.gather(
        *(
            critique_and_revise(
                judging.judge,
                job.constitution,
                record.text,
                original,
                job.spec.judge_config,
                nonces=judging.nonces,
                relevance=judging.relevance,
            )
            for original in originals
        )
    )
    revised = [c.completed > 0 and c.final != c.original for c in chains]
    checks: list[Comparison | None] = [None] * len(chains)
    if job.spec.quality.verify_revisions:
        to_check = [i for i, is_revised in enumerate(revised) if is_revised]
        verdicts = await asyncio.gather(*(_verify(judging, chains[i]) for i in to_check))
        for i, verdict in zip(to_check, verdicts, strict=True):
            checks[i] = verdict
    result: dict[str, Any] = {
        "candidates": [c.model_dump(mode="json") for c in candidates],
        "relevance": judging.relevance.model_dump(mode="json") if judging.relevance else None,
        "chains": [c.model_dump(mode="json", exclude={"relevance"}) for c in chains],
        "verifications": [c.model_dump(mode="json") for c in checks if c is not None],
        "rejected": [
            _rejection(chain, is_revised, check)
            for chain, is_revised, check in zip(chains, revised, checks, strict=True)
        ],
    }
    if chains and all(c.error for c in chains):
        return [], result, f"every revision chain failed: {chains[0].error}"
    preferences = [
        Preference(
            **common,
            chosen=chain.final,
            rejected=chain.original,
            source="revision",
            principles=[r.principle_id for r in chain.rounds if r.ok],
            applicable=judging.relevance.applied if judging.relevance else None,
            critique=next(
                (r.critique.text for r in reversed(chain.rounds) if r.ok and r.critique.text),
                None,
            ),
            **_verdict_fields(check, judging.calibration_id),
        )
        for chain, is_revised, check in zip(chains, revised, checks, strict=True)
        if is_revised and (check is None or check.p_a is not None)
    ]
    return preferences, result, None


def _rejection(chain: RevisionChain, revised: bool, check: Comparison | None) -> Flaw | None:
    """Why a chain made no row (None: it made one, which the judge may still not prefer)."""
    if chain.flaw is not None:
        return chain.flaw
    if not revised:
        return "unchanged"
    return "failed" if check is not None and check.p_a is None else None


async def _verify(judging: _Judging, chain: RevisionChain) -> Comparison:
    """The judge's verdict on the final revision (as `a`) against the original (as `b`)."""
    comparison = await compare(
        judging.judge,
        judging.job.constitution,
        chain.prompt,
        chain.final,
        chain.original,
        judging.job.spec.judge_config,
        nonces=judging.nonces,
        relevance=judging.relevance,
    )
    if judging.calibration is not None:
        fit = judging.calibration
        comparison = calibrated(comparison, fit.record.calibration, fit.only)
    return comparison


def _verdict_fields(check: Comparison | None, calibration_id: str | None) -> dict[str, Any]:
    """A revision row's p_chosen and provenance from its check (nothing when unchecked)."""
    if check is None:
        return {}
    return {
        "p_chosen": check.p_a,
        "p_chosen_raw": check.p_a if check.p_a_raw is None else check.p_a_raw,
        "calibration": calibration_id if check.p_a_raw is not None else None,
        "protocol": check.protocol,
        "margin": check.margin,
        "position_consistent": check.position_consistent,
    }
