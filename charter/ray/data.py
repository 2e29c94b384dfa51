"""Judging Ray Data datasets: callable classes for `Dataset.map_batches`.

Ray Data builds one instance of a callable class per actor of its pool and calls it with each
batch, so each actor opens its judge once and keeps its connections for every batch it is
given. Both classes judge the rows of a batch at once (the judge's own `concurrency` bounds the
requests in flight per actor) on charter's shared background loop, and return the batch with
columns added, in the format they were given (a dict of NumPy arrays, Ray Data's default; a
pandas DataFrame; or a pyarrow Table). Chain stages with `batch_format="pyarrow"`: the nested
columns (`principles`, `principle_scores`) then pass from one stage to the next as Arrow lists
of structs, where NumPy batches would hand them on as arrays of objects that Ray can only
pickle.

    ds.map_batches(PairJudge, fn_constructor_kwargs={"settings": settings}, concurrency=4)

`PairJudge` asks the question `charter judge compare` asks (pairwise or pointwise, as the
`JudgeConfig` says) of rows holding a prompt and two responses; `RewardScorer` gives each
row's response the constitution's reward (`charter.judge.reward`). Neither needs the store, so
neither needs `ray` itself: Ray Data imports and pickles them, and a test can call them on a
plain dict. Nonces are drawn at random, as the CLI's `judge compare` draws them: nothing here
is cached, so a dataset judged twice is paid for twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.constitution import Constitution, load_constitution
from charter.judge._sync import run_sync
from charter.judge.backends.base import ChatModel
from charter.judge.backends.options import BackendOptions
from charter.judge.config import JudgeConfig
from charter.judge.results import Comparison, Provenance
from charter.judge.reward import DEADLINE_FIELD, ConstitutionRewarder, RewardDeadline, RewardItem
from charter.settings import DEFAULT_MODEL, DEFAULT_PRINCIPLES_DIR

Columns = dict[str, list[Any]]
_PROVENANCE_COLUMNS = ("judge", "constitution_digest", "constitution_version")  # in this order


class DataJudgeSettings(BaseModel):
    """Which judge a Ray Data stage asks, how, and where its rows keep their texts.

    `constitution` is best passed loaded (`load_constitution(...)`): it then travels to the
    actors with the settings, and the cluster's machines need no principles directory.
    `backend` holds the endpoints (several: least in flight first), the timeout and the
    requests in flight per actor; the API key is read on each actor from the variable it names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(
        default=DEFAULT_MODEL,
        description="Judge model spec: openai:MODEL, hf:PATH or smollm2.",
    )
    backend: BackendOptions = Field(
        default_factory=BackendOptions,
        description="How each actor reaches the judge: base_url (a comma-separated list for "
        "a fleet), timeout_s, max_concurrency (requests in flight per actor and endpoint).",
    )
    constitution: Constitution | Path = Field(
        default=DEFAULT_PRINCIPLES_DIR,
        description="The constitution, or a principles directory each actor can read.",
    )
    config: JudgeConfig = Field(
        default=JudgeConfig(), description="How the judge is asked (every JudgeConfig field)."
    )
    prompt_column: str = Field(default="prompt", min_length=1)
    a_column: str = Field(default="a", min_length=1, description="PairJudge: response A.")
    b_column: str = Field(default="b", min_length=1, description="PairJudge: response B.")
    response_column: str = Field(
        default="response", min_length=1, description="RewardScorer: the response rewarded."
    )
    reference_column: str = Field(
        default="reference",
        min_length=1,
        description="RewardScorer: a reference answer, when the batch has this column and "
        "the row's value is set (the reward is then P(response beats it)).",
    )
    deadline_s: float = DEADLINE_FIELD


class _Stage:
    """What both classes share: the settings, the constitution and one judge per actor."""

    def __init__(self, settings: DataJudgeSettings | dict[str, Any] | None = None) -> None:
        self.settings = DataJudgeSettings.model_validate(settings or {})
        given = self.settings.constitution
        self.constitution = given if isinstance(given, Constitution) else load_constitution(given)
        self._model: ChatModel | None = None

    @property
    def model(self) -> ChatModel:
        if self._model is None:
            from charter.judge.backends.registry import load_model

            self._model = load_model(self.settings.judge, self.settings.backend)
        return self._model

    def close(self) -> None:
        """Close the judge's connections (Ray Data ends its actors without asking)."""
        if self._model is not None:
            run_sync(self._model.aclose())
            self._model = None

    def _apply(self, batch: Any, work: Callable[[Columns], Coroutine[Any, Any, Columns]]) -> Any:
        columns = _columns(batch)
        added = run_sync(work(columns))
        return _with_columns(batch, added)

    def _texts(self, columns: Columns, name: str) -> list[str]:
        if name not in columns:
            raise KeyError(
                f"charter.ray: the batch has no {name!r} column (columns: {sorted(columns)})"
            )
        return [str(value) for value in columns[name]]

    def _provenance(self, n: int) -> Columns:
        fields = Provenance.of(self.constitution, self.model.spec).fields()
        return {name: [fields[name]] * n for name in _PROVENANCE_COLUMNS}


class PairJudge(_Stage):
    """Judge rows of (prompt, a, b); add `p_a`, `winner`, `position_consistent`, `principles`
    (per-principle verdicts), `failed`, `error` and provenance (`protocol`, `judge`,
    `constitution_digest`, `constitution_version`).

    The verdicts are `charter judge compare`'s: the same principles, orders and aggregation
    for the same settings. `p_a` is NaN and `winner` null when no judgment succeeded.
    """

    def __call__(self, batch: Any) -> Any:
        return self._apply(batch, self._judge)

    async def _judge(self, columns: Columns) -> Columns:
        from charter.judge.compare import compare

        s = self.settings
        prompts = self._texts(columns, s.prompt_column)
        a_texts = self._texts(columns, s.a_column)
        b_texts = self._texts(columns, s.b_column)
        results = await asyncio.gather(
            *(
                compare(self.model, self.constitution, p, a, b, s.config)
                for p, a, b in zip(prompts, a_texts, b_texts, strict=True)
            )
        )
        return {**_verdict_columns(results), **self._provenance(len(results))}


def _verdict_columns(results: Sequence[Comparison]) -> Columns:
    return {
        "p_a": [float("nan") if r.p_a is None else r.p_a for r in results],
        "winner": [r.winner for r in results],
        "position_consistent": [r.position_consistent for r in results],
        "principles": [
            [
                {
                    "principle_id": v.principle_id,
                    "weight": v.weight,
                    "p_a": v.p_a,
                    "succeeded": v.succeeded,
                    "consistent": v.consistent,
                }
                for v in r.principles
            ]
            for r in results
        ],
        "failed": [r.failed for r in results],
        "error": [_first_error(r) for r in results],
        "protocol": [r.protocol for r in results],
    }


def _first_error(result: Comparison) -> str | None:
    errors = [j.error for j in result.judgments if j.error]
    errors += [j.error for s in result.scores for j in s.judgments if j.error]
    return errors[0] if errors else None


class RewardScorer(_Stage):
    """Reward each row's response under the constitution (charter's RL reward): add `reward`
    in [0, 1], `reward_fallback`, `reward_timed_out`, `principle_scores` (a list of
    {principle_id, score}), `reward_error` and provenance (after a `PairJudge` stage, the same
    judge's provenance is written again).

    Without a reference the reward is the pointwise P(yes) of the response alone; with one
    (`reference_column`) it is P(response beats the reference). A batch shares one deadline
    (`deadline_s`): a judgment not back by then, or with no verdict, gets the mean reward of
    the same prompt's other rows (else 0.5) and `reward_fallback` true, never an error that
    stops the dataset.
    """

    def __init__(self, settings: DataJudgeSettings | dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._rewarder: ConstitutionRewarder | None = None

    def __call__(self, batch: Any) -> Any:
        return self._apply(batch, self._score)

    async def _score(self, columns: Columns) -> Columns:
        s = self.settings
        if self._rewarder is None:
            self._rewarder = ConstitutionRewarder(
                self.model, self.constitution, s.config, RewardDeadline(deadline_s=s.deadline_s)
            )
        prompts = self._texts(columns, s.prompt_column)
        responses = self._texts(columns, s.response_column)
        references: list[Any] = list(columns.get(s.reference_column, [None] * len(prompts)))
        items = [
            RewardItem(
                prompt=p,
                response=r,
                reference=str(ref) if isinstance(ref, str) and ref else None,
                group=p,
            )
            for p, r, ref in zip(prompts, responses, references, strict=True)
        ]
        rewards = await self._rewarder.rewards(items)
        return {
            "reward": [r.reward for r in rewards],
            "reward_fallback": [r.fallback for r in rewards],
            "reward_timed_out": [r.timed_out for r in rewards],
            "principle_scores": [
                [{"principle_id": k, "score": v} for k, v in sorted(r.principle_scores.items())]
                for r in rewards
            ],
            "reward_error": [r.error for r in rewards],
            **self._provenance(len(rewards)),
        }


def _columns(batch: Any) -> Columns:
    """A batch as lists by column: a dict of arrays or lists, a DataFrame, or a pyarrow Table."""
    if isinstance(batch, dict):
        return {str(name): list(values) for name, values in batch.items()}
    if hasattr(batch, "to_pydict"):  # pyarrow.Table
        return {str(k): list(v) for k, v in batch.to_pydict().items()}
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return {str(name): batch[name].tolist() for name in batch.columns}
    raise TypeError(
        f"charter.ray: a batch must be a dict of columns, a pandas DataFrame or a pyarrow "
        f"Table, not {type(batch).__name__}"
    )


def _with_columns(batch: Any, added: Columns) -> Any:
    """`batch` with the `added` columns, in the batch's own format."""
    if isinstance(batch, dict):
        import numpy as np

        out = dict(batch)
        for name, values in added.items():
            array = np.empty(len(values), dtype=object)  # lists and None stay as they are
            array[:] = values
            out[name] = array if name not in _NUMERIC else np.asarray(values, dtype=float)
        return out
    if hasattr(batch, "to_pydict"):
        import pyarrow as pa

        table = batch
        for name, values in added.items():
            column = pa.array(values)
            index = table.schema.get_field_index(name)
            table = (
                table.set_column(index, name, column)
                if index >= 0
                else table.append_column(name, column)
            )
        return table
    frame = batch.copy()
    for name, values in added.items():
        frame[name] = values
    return frame


_NUMERIC = {"p_a", "reward"}
"""Columns always numbers (NaN where no verdict): plain float arrays in the NumPy format."""
