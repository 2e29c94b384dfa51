"""Fitted calibrations of a judge's confidence, versioned in the store (and a few shipped).

A calibration is only valid for what it was fit for: one judge, one constitution (digest), one
protocol and the settings that change a verdict (K, seed, chain of thought, ...). It is keyed
by exactly those, so a job finds one only when its labels would come out of the same judge the
same way; otherwise its rows say plainly that `p_chosen` is raw. Fitting again adds a new
version; the newest wins, and every row names the calibration it used.

Calibrations shipped with charter (the embedded default judge on the default constitution) live
in `charter/data/calibrations/` and are used when the store has none of its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charter.common.datafiles import DataFileError, read_json_document
from charter.common.limits import InputLimits
from charter.constitution import Constitution, canonical_digest
from charter.judge.backends.base import ChatModel
from charter.judge.calibration import (
    Calibration,
    crossfit_folds,
    fit_calibration,
    holdout_split,
)
from charter.judge.config import VERDICT_FIELDS, JudgeConfig, Protocol
from charter.judge.qualify import (
    EvalReport,
    LabelledPair,
    judge_pairs,
    label_quality,
    qualification_report,
)
from charter.judge.results import Comparison

CALIBRATIONS = "calibrations"


class CalibrationError(ValueError):
    """A calibration that cannot be found or read; the message says which and where."""


class CalibrationRecord(BaseModel):
    """One fitted calibration and what it was fit for, with its held-out figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    judge: str
    constitution_digest: str
    protocol: Protocol
    settings: str = Field(description="Digest of the verdict settings it was fit under.")
    calibration: Calibration
    pairs_source: str
    heldout: dict[str, Any] = Field(
        default={}, description="Held-out figures, raw and calibrated (pairs, ECE, Brier, ...)."
    )
    created_at: str
    shipped: bool = False
    principle_digests: tuple[str, ...] = Field(
        default=(),
        description="Digests of the enabled principles it was fit under: a verdict given under "
        "these alone is the same verdict after another principle is edited, so it keeps its "
        "calibration (empty: a record from before, valid for its constitution only).",
    )
    defaults: dict[str, Any] = Field(
        default={}, description="The constitution's defaults it was fit under (K, tie margin)."
    )


@dataclass(frozen=True)
class CalibrationFit:
    """A calibration found for a constitution, and which verdicts it may calibrate.

    Fit for this very constitution, it calibrates every verdict (`only` is None). Fit before
    some principles were edited, added or removed, it calibrates the verdicts given under
    unchanged principles alone (`only`: their digests), whose raw p_a is exactly what it was
    under the constitution the calibration was fit for; verdicts that involve a principle in
    `stale` stay raw, and say so.
    """

    record: CalibrationRecord
    only: frozenset[str] | None = None
    stale: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return self.only is not None


def settings_digest(config: JudgeConfig) -> str:
    """Digest of the config's settings that can change a verdict (the protocol is keyed
    apart)."""
    return canonical_digest(config.identity(include=set(VERDICT_FIELDS - {"protocol"})))


def new_record(
    calibration: Calibration,
    *,
    judge: str,
    constitution: Constitution,
    config: JudgeConfig,
    pairs_source: str,
    heldout: dict[str, Any],
) -> CalibrationRecord:
    """A record for a freshly fitted calibration; its id hashes its content and time."""
    config = config.resolved(judge)
    created_at = datetime.now(UTC).isoformat()
    body: dict[str, Any] = {
        "judge": judge,
        "constitution_digest": constitution.digest,
        "principle_digests": sorted(p.digest for p in constitution.enabled),
        "defaults": constitution.defaults.model_dump(mode="json"),
        "protocol": config.protocol_for(judge),
        "settings": settings_digest(config),
        "calibration": calibration.model_dump(mode="json"),
        "pairs_source": pairs_source,
        "heldout": heldout,
        "created_at": created_at,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return CalibrationRecord(id="cal-" + digest[:12], **body)


def ensure_table(db: sqlite_utils.Database) -> None:
    if CALIBRATIONS not in db.table_names():
        db[CALIBRATIONS].create(  # type: ignore[union-attr]
            {
                "id": str,
                "judge": str,
                "constitution_digest": str,
                "protocol": str,
                "settings": str,
                "record": str,
                "created_at": str,
            },
            pk="id",
        )


def save(db: sqlite_utils.Database, record: CalibrationRecord) -> None:
    ensure_table(db)
    with db.conn:
        db[CALIBRATIONS].insert(  # type: ignore[union-attr]
            {
                "id": record.id,
                "judge": record.judge,
                "constitution_digest": record.constitution_digest,
                "protocol": record.protocol,
                "settings": record.settings,
                "record": record.model_dump_json(),
                "created_at": record.created_at,
            },
            ignore=True,
        )


def stored(db: sqlite_utils.Database) -> list[CalibrationRecord]:
    """The store's calibrations, newest first."""
    if CALIBRATIONS not in db.table_names():
        return []
    rows = db[CALIBRATIONS].rows_where(order_by="created_at desc")
    return [CalibrationRecord.model_validate_json(r["record"]) for r in rows]


def shipped() -> list[CalibrationRecord]:
    """The calibrations that come with charter (read from package data)."""
    folder = resources.files("charter") / "data" / "calibrations"
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            try:
                record = CalibrationRecord.model_validate_json(entry.read_text("utf-8"))
            except ValueError as exc:
                raise CalibrationError(f"shipped calibration {entry.name}: {exc}") from None
            found.append(record.model_copy(update={"shipped": True}))
    return found


def load(db: sqlite_utils.Database, ref: str) -> CalibrationRecord:
    """A calibration named by id (the store's or shipped) or by a JSON file: a record as
    `charter judge calibrate --json` writes it, or just `{"temperature": T, "bias": B}`."""
    path = Path(ref)
    if not path.is_file():
        if ref.endswith(".json"):
            raise CalibrationError(f"{ref}: no such calibration file")
        return get(db, ref)
    try:
        data = read_json_document(path, InputLimits.from_env())
    except DataFileError as exc:
        reason = f"not a JSON calibration: {exc.reason}"
        shown = DataFileError(path, reason, line=exc.line, column=exc.column)
        raise CalibrationError(str(shown)) from None
    if isinstance(data, dict) and isinstance(data.get("record"), dict):
        data = data["record"]  # the whole `calibrate --json` output
    try:
        if isinstance(data, dict) and "calibration" in data:
            return CalibrationRecord.model_validate(data)
        calibration = Calibration.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise CalibrationError(f"{path}: {where}: {err['msg']}") from None
    return CalibrationRecord(
        id=f"file:{path.name}",
        judge="",
        constitution_digest="",
        protocol="pairwise",
        settings="",
        calibration=calibration,
        pairs_source=str(path),
        created_at="",
    )


def find(
    db: sqlite_utils.Database, judge: str, constitution_digest: str, config: JudgeConfig
) -> CalibrationRecord | None:
    """The newest calibration fit for exactly this judge, constitution, protocol and settings:
    the store's own first, else a shipped one; None when there is none."""
    config = config.resolved(judge)
    want = (judge, constitution_digest, config.protocol_for(judge), settings_digest(config))
    for record in [*stored(db), *shipped()]:
        if (record.judge, record.constitution_digest, record.protocol, record.settings) == want:
            return record
    return None


def _defaults_changed(
    record: CalibrationRecord, constitution: Constitution, config: JudgeConfig | None
) -> dict[str, tuple[Any, Any]]:
    """The constitution defaults that move p_a and changed since the fit: K, unless the job
    sets its own (the tie margin and revision rounds never change a p_a)."""
    if config is not None and config.principles is not None:
        return {}
    name = "principles_per_comparison"
    before, after = record.defaults.get(name), getattr(constitution.defaults, name)
    return {} if before == after else {name: (before, after)}


def fit_for(
    record: CalibrationRecord, constitution: Constitution, config: JudgeConfig | None = None
) -> CalibrationFit | None:
    """Which of `constitution`'s verdicts `record` may calibrate; None when none."""
    if record.constitution_digest == constitution.digest:
        return CalibrationFit(record)
    if not record.principle_digests or _defaults_changed(record, constitution, config):
        return None
    fitted = set(record.principle_digests)
    kept = frozenset(p.digest for p in constitution.enabled if p.digest in fitted)
    if not kept:
        return None
    stale = tuple(sorted(p.id for p in constitution.enabled if p.digest not in fitted))
    return CalibrationFit(record, kept, stale)


def find_fit(
    db: sqlite_utils.Database, judge: str, constitution: Constitution, config: JudgeConfig
) -> CalibrationFit | None:
    """The calibration a job under `constitution` uses: one fit for it exactly, else the
    newest fit for this judge, protocol and settings before some principles changed (valid for
    the verdicts under the others); None when there is neither."""
    exact = find(db, judge, constitution.digest, config)
    if exact is not None:
        return CalibrationFit(exact)
    for record in _same_settings(db, judge, config):
        fit = fit_for(record, constitution, config)
        if fit is not None:
            return fit
    return None


def why_none(
    db: sqlite_utils.Database, judge: str, constitution: Constitution, config: JudgeConfig
) -> str:
    """Why no calibration fits, naming the newest one that did before and what changed since,
    and the one command that fits a new one."""
    config = config.resolved(judge)
    records = _same_settings(db, judge, config)
    refit = refit_command(judge, config, records[0].pairs_source if records else None)
    if not records:
        return f"no calibration was fit for this judge and settings; fit one: {refit}"
    record = records[0]
    defaults = _defaults_changed(record, constitution, config)
    if record.principle_digests and defaults:
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in defaults.items())
        what = f"the constitution's defaults changed since ({changed})"
    else:
        fitted = set(record.principle_digests)
        edited = [p.id for p in constitution.enabled if p.digest not in fitted]
        what = (
            f"every principle changed since ({', '.join(edited)})"
            if record.principle_digests
            else "the constitution changed since"
        )
    return (
        f"{record.id} was fit for constitution {record.constitution_digest[:12]} and "
        f"{what}; re-fit: {refit}"
    )


def stale_note(fit: CalibrationFit, config: JudgeConfig | None = None) -> str:
    """One line for a job whose calibration leaves some principles' verdicts raw."""
    return (
        f"{fit.record.id} calibrates verdicts under the principles unchanged since it was fit; "
        f"those involving {', '.join(fit.stale)} (edited or added since) stay raw; re-fit: "
        + refit_command(
            fit.record.judge,
            config.resolved(fit.record.judge) if config else None,
            fit.record.pairs_source,
        )
    )


def refit_command(judge: str, config: JudgeConfig | None, pairs: str | None) -> str:
    """The `charter judge calibrate` command that fits a calibration for these settings."""
    words = ["charter judge calibrate", f"--pairs {pairs or 'examples/labelled-pairs.jsonl'}"]
    words.append(f"--judge {judge}")
    if config is not None:
        defaults = JudgeConfig()
        for name in sorted(VERDICT_FIELDS):
            value = getattr(config, name)
            if value != getattr(defaults, name) and value is not None and name != "protocol":
                flag = name.replace("_", "-")
                words.append(
                    (f"--{flag}" if value else f"--no-{flag}")
                    if isinstance(value, bool)
                    else f"--{flag} {value}"
                )
        if config.protocol != defaults.protocol:
            words.append(f"--protocol {config.protocol}")
    return " ".join(words)


def _same_settings(
    db: sqlite_utils.Database, judge: str, config: JudgeConfig
) -> list[CalibrationRecord]:
    config = config.resolved(judge)
    want = (judge, config.protocol_for(judge), settings_digest(config))
    return [r for r in [*stored(db), *shipped()] if (r.judge, r.protocol, r.settings) == want]


def get(db: sqlite_utils.Database, calibration_id: str) -> CalibrationRecord:
    """A calibration by id (the store's or a shipped one)."""
    for record in [*stored(db), *shipped()]:
        if record.id == calibration_id:
            return record
    raise CalibrationError(f"no calibration {calibration_id!r} in this store or shipped")


@dataclass(frozen=True)
class CalibrationRun:
    """What `calibrate_on_pairs` made: the record to keep and its held-out report."""

    record: CalibrationRecord
    heldout_report: EvalReport
    heldout_pairs: list[LabelledPair]
    fit_pairs: int

    def summary(self) -> dict[str, Any]:
        return {
            "record": self.record.model_dump(mode="json"),
            "heldout": self.heldout_report.model_dump(mode="json", exclude={"outcomes"}),
        }


async def calibrate_on_pairs(
    model: ChatModel,
    constitution: Constitution,
    pairs: Sequence[LabelledPair],
    config: JudgeConfig,
    *,
    holdout: float = 0.3,
    folds: int | None = None,
    bins: int = 10,
    concurrency: int = 16,
    pairs_source: str = "<pairs>",
    seed: int = 0,
    fit_bias: bool = False,
    on_result: Callable[[int, Comparison], None] | None = None,
) -> CalibrationRun:
    """Judge the labelled pairs, fit a calibration on a seeded part, report it on the rest.

    With `folds`, the calibration is fit on every pair and reported by cross-fitting instead:
    the pairs are dealt into seeded folds, and each pair's calibrated p_a comes from a fit on
    the other folds, so every pair is held out once and the figures cover all of them (on a
    few hundred pairs a 30% hold-out leaves an ECE mostly made of noise).

    Pairs the judge gave no verdict are left out of the fit (they carry no confidence) but
    stay in the held-out report, where they count against coverage. Only the temperature is
    fitted unless `fit_bias`: both protocols' p_a is symmetric in a and b (pairwise averages
    both orders; pointwise has none), so a bias would only learn which side the labelled
    file happened to prefer more often.
    """
    config = config.resolved(model.spec)
    _check_split(len(pairs), holdout, folds, seed, pairs_source)  # before any call is paid for
    started = time.perf_counter()
    comparisons = await judge_pairs(
        model, constitution, pairs, config, concurrency=concurrency, on_result=on_result
    )
    fitted = fit_and_hold_out(
        [c.p_a for c in comparisons],
        [p.preferred == "a" for p in pairs],
        holdout=holdout,
        folds=folds,
        seed=seed,
        fit_bias=fit_bias,
        pairs_source=pairs_source,
    )
    calibration = fitted.calibration
    held_pairs = [pairs[i] for i in fitted.held]
    report = qualification_report(
        held_pairs,
        [comparisons[i] for i in fitted.held],
        judge=model.spec,
        constitution=constitution,
        config=config,
        calibration=calibration if folds is None else None,
        latency_s=time.perf_counter() - started,
    )
    if folds is not None:  # each held-out pair calibrated by its own fold's fit
        margin = config.margin(constitution)
        report = report.model_copy(
            update={
                "calibration": calibration,
                "calibrated": label_quality(
                    [p.preferred for p in held_pairs], fitted.held_calibrated, margin
                ),
                "outcomes": [
                    o.model_copy(update={"p_a_calibrated": q})
                    for o, q in zip(report.outcomes, fitted.held_calibrated, strict=True)
                ],
            }
        )
    heldout: dict[str, Any] = {"pairs": len(held_pairs), "bins": bins}
    if folds is not None:
        heldout["method"] = crossfit_method(folds, len(pairs), seed)
    for name, quality in (("raw", report.raw), ("calibrated", report.calibrated)):
        if quality is not None and quality.calibration is not None:
            heldout[name] = {
                "agreement": quality.agreement,
                "coverage": quality.coverage,
                "ece": quality.calibration.ece,
                "brier": quality.calibration.brier,
                "log_loss": quality.calibration.log_loss,
            }
    record = new_record(
        calibration,
        judge=model.spec,
        constitution=constitution,
        config=config,
        pairs_source=pairs_source,
        heldout=heldout,
    )
    return CalibrationRun(record, report, held_pairs, calibration.fitted_on)


def crossfit_method(folds: int, pairs: int, seed: int) -> str:
    """How held-out figures were made by cross-fitting, as a record names it."""
    if folds == pairs:
        return "leave-one-out cross-fitting"
    return f"{folds}-fold cross-fitting (seed {seed})"


@dataclass(frozen=True)
class HeldOutFit:
    """A calibration and the pairs it is judged on: `held` (indices) with each one's
    calibrated p_a from a fit that never saw it (None: the judge gave no verdict)."""

    calibration: Calibration
    held: list[int]
    held_calibrated: list[float | None]


def _check_split(n: int, holdout: float, folds: int | None, seed: int, source: str) -> None:
    if folds is not None:
        if not 2 <= folds <= n or n - (n + folds - 1) // folds < 2:
            raise CalibrationError(
                f"{source}: {n} labelled pair(s) cannot be cross-fitted in {folds} folds; "
                "each fit needs at least 2 pairs outside its fold"
            )
        return
    fit_idx = holdout_split(n, holdout, seed)[0] if n >= 2 else []
    if len(fit_idx) < 2:
        raise CalibrationError(
            f"{source}: {n} labelled pair(s) leave {len(fit_idx)} to fit on after "
            f"holding out {holdout:g} of them; a calibration needs at least 2 to fit on"
        )


def fit_and_hold_out(
    probs: Sequence[float | None],
    labels: Sequence[bool],
    *,
    holdout: float = 0.3,
    folds: int | None = None,
    seed: int = 0,
    fit_bias: bool = False,
    pairs_source: str = "<pairs>",
) -> HeldOutFit:
    """Fit a calibration to raw p_a against labels (True: a preferred) and calibrate held-out
    pairs with fits that never saw them: a seeded `holdout` share with the calibration fit on
    the rest, or, with `folds`, every pair by cross-fitting while the calibration is fit on
    all. Pure: `calibrate_on_pairs` calls it on the judge's verdicts."""
    n = len(probs)
    _check_split(n, holdout, folds, seed, pairs_source)

    def fit(indices: Sequence[int]) -> Calibration:
        usable = [(p, labels[i]) for i in indices if (p := probs[i]) is not None]
        if len(usable) < 2:
            raise CalibrationError(
                f"{pairs_source}: the judge gave a verdict on {len(usable)} of the "
                f"{len(indices)} pairs to fit on; a calibration needs at least 2"
            )
        return fit_calibration([p for p, _ in usable], [y for _, y in usable], fit_bias=fit_bias)

    def apply(calibration: Calibration, i: int) -> float | None:
        p = probs[i]
        return None if p is None else calibration.apply(p)

    if folds is None:
        fit_idx, held = holdout_split(n, holdout, seed)
        calibration = fit(fit_idx)
        return HeldOutFit(calibration, held, [apply(calibration, i) for i in held])
    calibrated: list[float | None] = [None] * n
    for fold in crossfit_folds(n, folds, seed):
        inside = set(fold)
        fold_fit = fit([i for i in range(n) if i not in inside])
        for i in fold:
            calibrated[i] = apply(fold_fit, i)
    return HeldOutFit(fit(range(n)), list(range(n)), calibrated)
