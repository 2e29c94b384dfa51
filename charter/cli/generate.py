"""`charter generate`, `charter export` and `charter jobs`: the dataset-making job."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from charter.batches.options import BatchOptions
from charter.jobs.spec import JobOptions, RunOptions
from charter.ray.options import RayOptions

from .common import dir_option, echo_json, friendly_errors, json_option, store_option
from .fields import model_options
from .lazy import LazyGroup
from .models import check_spec, judge_options, load_for, open_batch_judge, policy_options
from .progress import ProgressBar

if TYPE_CHECKING:
    import sqlite_utils

    from charter.batches.model import OpenAIBatchModel
    from charter.jobs.session import LocalModels, Role
    from charter.jobs.stopping import StopRequest
    from charter.jobs.store import JobRecord
    from charter.jobs.summary import CalibrationFigures, JobSummary
    from charter.judge import ChatModel
    from charter.ray.driver import RayWorkers


@click.command()
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(path_type=Path),
    help="Prompts file: .jsonl, .json, .csv, .tsv, .txt, .parquet, or a saved datasets dir.",
)
@click.option("--column", default="prompt", show_default=True, help="Field holding the prompt.")
@click.option(
    "--responses-column",
    default="responses",
    show_default=True,
    help="Field holding ready-made candidate responses (optional; sampled when absent).",
)
@model_options(JobOptions, into="options", exclude={"policy", "judge"}, flags={"n": "-n"})
@model_options(RunOptions, into="run")
@model_options(BatchOptions, into="batching")
@model_options(RayOptions, into="scaling")
@click.option("--resume", "resume_id", metavar="JOB_ID", help="Resume a stored job by id.")
@click.option(
    "--price-in",
    type=click.FloatRange(min=0),
    default=None,
    help="Judge price, USD per 1M prompt tokens (for the cost figure).",
)
@click.option(
    "--price-out",
    type=click.FloatRange(min=0),
    default=None,
    help="Judge price, USD per 1M completion tokens.",
)
@policy_options
@judge_options
@dir_option
@store_option
@json_option
@friendly_errors
def generate(
    prompts_path: Path | None,
    column: str,
    responses_column: str,
    options: JobOptions,
    run: RunOptions,
    batching: BatchOptions,
    scaling: RayOptions,
    resume_id: str | None,
    price_in: float | None,
    price_out: float | None,
    policy_spec: str,
    policy_base_url: str | None,
    judge_spec: str,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    directory: Path,
    store_path: Path,
    as_json: bool,
) -> None:
    """Make a preference dataset from a file of prompts.

    Running the same command again resumes the same job (its id is a hash of the inputs and
    settings), reusing every model call already stored; so does --resume JOB_ID. A job
    records the constitution it ran under and always resumes under it.

    Ctrl-C or SIGTERM stops the job cleanly: the model calls in flight finish and are stored
    (a second signal abandons them), the job is recorded as stopped, and --resume carries on.
    One job runs in one process at a time: a second run of it is refused while the first
    holds the job's lease.

    --batch sends the judge's calls through the OpenAI Batch API; the batches are recorded in
    the store, and a run stopped while they are answered resumes polling them.

    --ray deals the prompts to Ray workers (--ray-workers), each with its own model clients;
    this process keeps the store, the lease and the job id, and commits what they send back
    (see docs/scale.md).

    \b
    Examples:
      charter generate --prompts examples/prompts.jsonl --mode revise
      charter generate --prompts data.jsonl --judge openai:gpt-4o-mini -n 4
    """
    from charter.calibrations import why_none
    from charter.call_cache import ensure_tables as ensure_call_tables
    from charter.constitution import load_constitution
    from charter.jobs.leases import LeaseSettings, ensure_free
    from charter.jobs.run import JobFailed, JobStopped
    from charter.jobs.session import LocalModels, job_session
    from charter.jobs.stopping import StopRequest
    from charter.jobs.store import check_tables, get_job, job_prompts
    from charter.jobs.summary import Prices
    from charter.prompt_files import load_prompts
    from charter.store import open_store

    on_ray = _ray_or_none(scaling, batching)  # before anything is read or written
    if not resume_id:  # bad inputs are refused before a store is opened (or created)
        if prompts_path is None:
            raise click.UsageError("give --prompts FILE (or --resume JOB_ID)")
        prompt_set = load_prompts(prompts_path, column=column, responses_column=responses_column)
        records = list(prompt_set)
        constitution = load_constitution(directory)
    db = open_store(store_path)
    check_tables(db)  # another program's tables are refused before anything is written
    ensure_call_tables(db)
    if resume_id:
        resumed = get_job(db, resume_id)
        ensure_free(db, resumed.id)  # a job another process runs is refused before models load
        records = [r for _, r in job_prompts(db, resumed.id)]
        spec = resumed.spec
        job_id = resumed.id
    else:
        spec = options.plan(
            db, records, constitution, default_judge=judge_spec, default_policy=policy_spec
        )
        job_id = spec.job_id
    local = LocalModels(judge_base_url, policy_base_url, timeout, concurrency)
    models: _CliModels | RayWorkers
    workers: RayWorkers | None = None
    if on_ray is not None:
        from charter.ray.driver import RayWorkers

        for role, model_spec in (("judge", spec.judge), ("policy", spec.policy)):
            check_spec(model_spec, f"--{role}")
        models = workers = RayWorkers(on_ray, scaling, local, name=job_id)
    else:
        models = _CliModels(local, db, batching)
    prices = (
        Prices(prompt=price_in or 0.0, completion=price_out or 0.0)
        if price_in is not None or price_out is not None
        else None
    )
    received: list[signal.Signals] = []

    async def go() -> JobSummary:
        async with job_session(db, models, spec, records) as session:
            # On Ray the workers start and open the models before the job is written.
            executor = await workers.start(spec, records) if workers is not None else None
            if resume_id:
                job = resumed
                _note(
                    as_json,
                    f"resuming {job.id} under constitution {job.constitution.version} "
                    f"({job.constitution.digest[:12]})",
                )
            else:
                job, created = session.start(spec, constitution, records, str(prompts_path))
                _note(
                    as_json,
                    f"{'started' if created else 'resuming'} {job.id}: {len(records)} prompts, "
                    f"mode {options.mode}, constitution {job.constitution.version} "
                    f"({job.constitution.digest[:12]})",
                )
            ensure_free(db, job.id)  # says who runs it; the run takes the lease for certain
            if job.spec.mode == "compare":
                calibrated = job.spec.calibration or (
                    "none fits this judge, so p_chosen is raw: "
                    + why_none(db, job.spec.judge, job.constitution, job.spec.judge_config)
                )
                _note(
                    as_json, f"judging {job.spec.judge_config.protocol}; calibration: {calibrated}"
                )
            stop = StopRequest()
            batch_judge = models.batch_judge if isinstance(models, _CliModels) else None
            with (
                ProgressBar("prompts", quiet=as_json) as progress,
                _stop_on_signals(stop, received),
            ):
                if batch_judge is not None:
                    batch_judge.on_status = progress.status
                return await session.run(
                    job,
                    # Batches are answered together: every prompt's calls should be in them.
                    concurrency=(
                        max(concurrency, batching.batch_max_calls) if batch_judge else concurrency
                    ),
                    on_progress=progress,
                    on_activity=None if as_json else progress.activity,
                    run=run,
                    prices=prices,
                    stop_request=stop,
                    lease=LeaseSettings.from_env(),
                    executor=executor,
                )

    def with_batches(summary: JobSummary) -> JobSummary:
        if isinstance(models, _CliModels) and models.batch_judge is not None:
            summary.batch = models.batch_judge.stats.as_dict()
        return summary

    try:
        with _on_cluster(on_ray, scaling):
            summary = with_batches(asyncio.run(go()))
    except JobFailed as exc:
        raise click.ClickException(
            f"{exc}\nNothing finished was lost; fix the model and resume with "
            f"`charter generate --resume {job_id}`."
        ) from None
    except JobStopped as exc:
        _report(with_batches(exc.summary), as_json)
        click.echo(f"{received[0].name}: {exc}", err=True)
        raise SystemExit(128 + received[0].value) from None  # the shell's code for a signal
    _report(summary, as_json)
    if summary.prompts.failed:
        click.echo(f"Error: {summary.error}", err=True)
        raise SystemExit(1)


def _ray_or_none(scaling: RayOptions, batching: BatchOptions) -> Any:
    """The `ray` module when the job runs on Ray (None when not); a one-line error when it
    cannot (no extra installed, or --batch asked too)."""
    if scaling.ray is None:
        return None
    if batching.batch:
        raise click.ClickException(
            "--ray and --batch cannot be combined: a batch is submitted from one process"
        )
    from charter.ray.cluster import RayUnavailable, require_ray

    try:
        return require_ray()
    except RayUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _on_cluster(ray: Any, scaling: RayOptions) -> Iterator[None]:
    """Joined to (or running) the job's Ray cluster for the block when the job runs on Ray;
    a cluster that cannot be had is a one-line error, raised before any job is written."""
    if ray is None:
        yield
        return
    from charter.ray.cluster import RayUnavailable, connected

    try:
        with connected(scaling.ray or "", local_cpus=scaling.ray_workers):
            yield
    except RayUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@dataclass
class _CliModels:
    """Where `charter generate`'s job session gets its models: loaded in this process, a
    model that does not load being a one-line error naming its option; with --batch, the
    judge answers through the Batch API (and so never samples as the policy)."""

    local: LocalModels
    db: sqlite_utils.Database
    batching: BatchOptions
    batch_judge: OpenAIBatchModel | None = None

    def endpoint(self, spec: str, role: Role) -> str | None:
        if role == "judge" and self.batching.batch:
            return "the Batch API"
        return self.local.endpoint(spec, role)

    async def open(self, spec: str, role: Role) -> ChatModel:
        if role == "judge" and self.batching.batch:
            self.batch_judge = open_batch_judge(
                spec,
                self.local.judge_base_url,
                self.local.timeout_s,
                self.local.max_concurrency,
                self.db,
                self.batching,
            )
            return self.batch_judge
        return load_for(spec, self.local.options(role), option=f"--{role}")

    async def release(self, model: ChatModel) -> None:
        await model.aclose()


def _report(summary: JobSummary, as_json: bool) -> None:
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)


@contextlib.contextmanager
def _stop_on_signals(stop: StopRequest, received: list[signal.Signals]) -> Iterator[None]:
    """SIGINT and SIGTERM ask the job to stop (`StopRequest`) rather than end the process,
    so the job is recorded as stopped and its lease released; each is noted in `received`."""
    from charter.jobs.stopping import STOP_GRACE_S

    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        again = bool(received)
        received.append(sig)
        stop.request()
        click.echo(
            f"{sig.name}: abandoning the model calls in flight"
            if again
            else f"{sig.name}: stopping; the model calls in flight get {STOP_GRACE_S:g} s to "
            f"finish and be stored ({sig.name} again abandons them)",
            err=True,
        )

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _note(as_json: bool, text: str) -> None:
    if not as_json:
        click.echo(text, err=True)


def _trust_line(calibration: CalibrationFigures | None, why_none: str | None = None) -> str:
    """How far p_chosen can be trusted, in one line: the calibration and its held-out figures."""
    if not calibration:
        return (
            f"raw ({why_none or 'no calibration fits this judge; run `charter judge calibrate`'})"
        )
    line = f"calibrated by {calibration.id} (T={calibration.temperature:.2f})"
    held = calibration.heldout or {}
    raw, fitted = held.get("raw"), held.get("calibrated")
    if raw and fitted:
        agreement = fitted.get("agreement")
        line += (
            f"; on {held.get('pairs')} held-out labelled pairs: agreement "
            + ("n/a" if agreement is None else f"{agreement:.0%}")
            + f", coverage {fitted['coverage']:.0%}, ECE {fitted['ece']:.3f} "
            f"(raw {raw['ece']:.3f})"
        )
    return line


def _print_summary(s: JobSummary) -> None:
    p = s.prompts
    consistency = s.position_consistency
    calls = s.calls
    lines = [
        f"job {s.job_id} ({s.mode}), constitution {s.constitution.version}",
        f"  prompts      {p.done}/{p.total} done, {p.failed} failed, {p.skipped} skipped",
        f"  preferences  {s.preferences} made, {s.exportable} exportable, "
        f"{s.filtered} below min confidence {s.min_confidence}",
    ]
    if s.judge_qualification is not None:
        lines.append(f"  judge        {s.judge_qualification.text}")
    if s.texts.total:
        lines.append(f"  {s.texts.kind:<12} {s.texts.describe()}")
    if s.judgments:
        lines.append(
            f"  judgments    {s.judgments}, {s.parse_failures} parse failures, "
            f"{s.backend_failures} backend failures, {s.ties} tied comparisons"
        )
    if s.incomplete_prompts:
        lines.append(
            f"  incomplete   {s.incomplete_prompts} prompt(s) kept with some calls still "
            "failed after every attempt"
        )
    if s.judgments and s.protocol != "pointwise":  # pointwise has no positions
        lines.append(
            "  position consistency "
            + (f"{consistency:.0%}" if consistency is not None else "n/a")
            + (
                "  (low: this judge mostly answers by slot, not content)"
                if consistency is not None and consistency < 0.5
                else ""
            )
        )
    if s.applied is not None:
        lines.append(
            "  applied      " + ", ".join(f.describe() for f in s.applied)
            if s.applied
            else "  applied      no principle (relevant selection)"
        )
    if s.protocol:
        lines.append(f"  protocol     {s.protocol}")
        lines.append(f"  p_chosen     {_trust_line(s.calibration, s.uncalibrated_because)}")
        if s.calibration is not None and s.calibration.note:
            lines.append(f"               {s.calibration.note}")
    if calls is not None:
        lines.append(f"  model calls  {calls.made} made, {calls.reused} reused from the store")
        lines += _endpoint_lines("judge", calls.judge.endpoints)
        lines += _endpoint_lines("policy", calls.policy.endpoints if calls.policy else None)
    if s.batch is not None:
        b = s.batch
        lines.append(
            f"  batch        {b['calls']} judge calls answered by batch; "
            f"{b['batches_created']} batches created, {b['batches_resumed']} resumed, "
            f"{b['failed_items']} failed items"
        )
    lines.append(f"  judge tokens {s.tokens.prompt} prompt, {s.tokens.completion} completion")
    if s.cost_usd is not None:
        lines.append(f"  cost         ${s.cost_usd:.4f}")
    if s.exportable:
        lines.append(f"export with: charter export {s.job_id} --format jsonl --out prefs.jsonl")
    else:
        lines.append("nothing to export yet: no preference reached the minimum confidence")
    click.echo("\n".join(lines))


def _endpoint_lines(role: str, endpoints: list[dict[str, Any]] | None) -> list[str]:
    """One line per endpoint of a model served by several: its calls, failures and rests."""
    if not endpoints:
        return []
    return [f"  {role} endpoints"] + [
        f"    {e['url']}  {e['calls']} calls, {e['failures']} failed, rested {e['rested']} times"
        for e in endpoints
    ]


@click.command("export")
@click.argument("job_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet", "hf"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output file (a directory for hf, or when --split is given).",
)
@click.option(
    "--kind",
    type=click.Choice(["preference", "sft"]),
    default="preference",
    show_default=True,
    help="preference triples, or SFT rows (prompt -> accepted revision or comparison winner).",
)
@click.option("--conversational", is_flag=True, help="Message lists instead of plain strings.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.5, 1.0),
    default=0.6,
    show_default=True,
    help="Drop rows (comparisons, checked revisions) with p_chosen below this.",
)
@click.option(
    "--split",
    "split_text",
    metavar="NAME=FRACTION",
    help="Hold out a deterministic split by prompt, e.g. test=0.1.",
)
@click.option("--push-to-hub", metavar="REPO", help="Also push the dataset to the HF Hub.")
@store_option
@json_option
@friendly_errors
def export(
    job_id: str,
    fmt: str,
    out: Path,
    kind: str,
    conversational: bool,
    min_confidence: float,
    split_text: str | None,
    push_to_hub: str | None,
    store_path: Path,
    as_json: bool,
) -> None:
    """Write a job's preferences as a dataset for datasets / TRL."""
    from charter.export import ExportError, export_job, parse_split
    from charter.store import open_store

    if fmt == "hf" or push_to_hub:
        import datasets

        datasets.disable_progress_bars()  # the CLI reports the result in one line

    try:
        report = export_job(
            open_store(store_path, create=False),
            job_id,
            out,
            fmt=fmt,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            conversational=conversational,
            min_confidence=min_confidence,
            split=parse_split(split_text),
            push_to_hub=push_to_hub,
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(report)
        return
    rows = ", ".join(f"{k} {v}" for k, v in report.rows.items())
    click.echo(f"wrote {rows} rows ({report.excluded} excluded) to {', '.join(report.paths)}")


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "conflicts": "charter.cli.workbench:conflicts",
        "diff": "charter.cli.workbench:diff",
        "rerun": "charter.cli.workbench:rerun",
    },
)
def jobs() -> None:
    """Inspect generation jobs in the store."""


@jobs.command("list")
@store_option
@json_option
@friendly_errors
def list_jobs(store_path: Path, as_json: bool) -> None:
    """List jobs, most recently run first."""
    from charter.jobs.store import list_jobs as stored_jobs
    from charter.jobs.store import preference_count, prompt_counts
    from charter.store import open_store

    db = open_store(store_path, create=False)
    found = stored_jobs(db)
    rows: list[dict[str, Any]] = [
        {
            "id": j.id,
            "status": j.status,
            "runner": _runner(db, j),
            "mode": j.spec.mode,
            "prompts": prompt_counts(db, j.id),
            "preferences": preference_count(db, j.id),
            "constitution_version": j.constitution.version,
            "created_at": j.created_at,
            "source": j.prompts_source,
        }
        for j in found
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no jobs yet (run `charter generate --prompts FILE`)")
    for r in rows:
        done = r["prompts"].get("done", 0)
        total = sum(r["prompts"].values())
        status = _shown_status(r["status"], r["runner"])
        click.echo(
            f"{r['id']}  {status:<11} {r['mode']:<8} {done}/{total} prompts  "
            f"{r['preferences']} prefs  constitution {r['constitution_version']}  "
            f"{r['source']}"
        )


def _runner(db: sqlite_utils.Database, job: JobRecord) -> dict[str, str] | None:
    """Who runs the job now (its live lease), or None."""
    from charter.jobs.leases import current

    lease = current(db, job.id)
    return {"holder": lease.holder, "lease_until": lease.until} if lease else None


def _shown_status(status: str, runner: dict[str, str] | None) -> str:
    """A job marked running that no runner holds was interrupted (its process was killed)."""
    return "interrupted" if status == "running" and runner is None else status


@jobs.command("show")
@click.argument("job_id")
@store_option
@json_option
@friendly_errors
def show_job(job_id: str, store_path: Path, as_json: bool) -> None:
    """Show one job: its spec, status and summary figures."""
    from charter.jobs.store import get_job
    from charter.jobs.summary import CallCounts, JobCalls, summarise_job
    from charter.store import open_store

    db = open_store(store_path, create=False)
    job = get_job(db, job_id)
    summary = summarise_job(db, job)
    runner = _runner(db, job)
    data = {
        "id": job.id,
        "status": job.status,
        "runner": runner,
        "error": job.error,
        "spec": job.spec.model_dump(mode="json"),
        "source": job.prompts_source,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "summary": summary,
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"{job.id}  {_shown_status(job.status, runner)}  ({job.prompts_source})")
    if runner:
        click.echo(f"run by {runner['holder']} (host:pid:run), lease until {runner['lease_until']}")
    elif job.status in ("running", "stopped"):
        click.echo(f"resume with: charter generate --resume {job.id}")
    if job.error:
        click.echo(f"error: {job.error}")
    for key, value in job.spec.model_dump().items():
        click.echo(f"  {key:<20} {value}")
    last_run = job.summary.get("calls")  # the calls of the run that last ended
    calls = (
        JobCalls.model_validate(last_run)
        if last_run
        else JobCalls(judge=CallCounts(made=0, reused=0))
    )
    _print_summary(summary.model_copy(update={"calls": calls}))
