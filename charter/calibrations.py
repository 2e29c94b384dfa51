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
from charter.judge.calibration import Calibration, fit_calibration, holdout_split
from charter.judge.config import IDENTITY, VERDICT_FIELDS, JudgeConfig, Protocol
from charter.judge.evaluate import EvalReport, LabelledPair, judge_pairs, summarise
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


def settings_digest(config: JudgeConfig) -> str:
    """Digest of the config's settings that can change a verdict (the protocol is keyed
    apart)."""
    return canonical_digest(
        config.model_dump(
            mode="json", include=set(VERDICT_FIELDS - {"protocol"}), context={IDENTITY: True}
        )
    )


def new_record(
    calibration: Calibration,
    *,
    judge: str,
    constitution_digest: str,
    config: JudgeConfig,
    pairs_source: str,
    heldout: dict[str, Any],
) -> CalibrationRecord:
    """A record for a freshly fitted calibration; its id hashes its content and time."""
    config = config.resolved(judge)
    created_at = datetime.now(UTC).isoformat()
    body: dict[str, Any] = {
        "judge": judge,
        "constitution_digest": constitution_digest,
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
    bins: int = 10,
    concurrency: int = 16,
    pairs_source: str = "<pairs>",
    seed: int = 0,
    fit_bias: bool = False,
    on_result: Callable[[int, Comparison], None] | None = None,
) -> CalibrationRun:
    """Judge the labelled pairs, fit a calibration on a seeded part, report it on the rest.

    Pairs the judge gave no verdict are left out of the fit (they carry no confidence) but
    stay in the held-out report, where they count against coverage. Only the temperature is
    fitted unless `fit_bias`: both protocols' p_a is symmetric in a and b (pairwise averages
    both orders; pointwise has none), so a bias would only learn which side the labelled
    file happened to prefer more often.
    """
    config = config.resolved(model.spec)
    fit_idx, held_idx = holdout_split(len(pairs), holdout, seed) if len(pairs) >= 2 else ([], [])
    if len(fit_idx) < 2:  # said before any judge call is paid for
        raise CalibrationError(
            f"{pairs_source}: {len(pairs)} labelled pair(s) leave {len(fit_idx)} to fit on after "
            f"holding out {holdout:g} of them; a calibration needs at least 2 to fit on"
        )
    started = time.perf_counter()
    comparisons = await judge_pairs(
        model, constitution, pairs, config, concurrency=concurrency, on_result=on_result
    )
    fit = [(comparisons[i].p_a, pairs[i].preferred == "a") for i in fit_idx]
    usable = [(p, y) for p, y in fit if p is not None]
    if len(usable) < 2:
        raise CalibrationError(
            f"{pairs_source}: the judge gave a verdict on {len(usable)} of the {len(fit)} pairs "
            "to fit on; a calibration needs at least 2"
        )
    calibration = fit_calibration([p for p, _ in usable], [y for _, y in usable], fit_bias=fit_bias)
    held_pairs = [pairs[i] for i in held_idx]
    report = summarise(
        held_pairs,
        [comparisons[i] for i in held_idx],
        judge=model.spec,
        constitution=constitution,
        config=config,
        calibration=calibration,
        latency_s=time.perf_counter() - started,
    )
    heldout: dict[str, Any] = {"pairs": len(held_pairs), "bins": bins}
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
        constitution_digest=constitution.digest,
        config=config,
        pairs_source=pairs_source,
        heldout=heldout,
    )
    return CalibrationRun(record, report, held_pairs, len(usable))
