"""charter on Ray: one job dealt to many workers, and judging Ray Data datasets.

`charter generate --ray` keeps the job's store, lease and ids in the driving process and deals
its prompts to Ray actors (`charter.ray.driver`, `charter.ray.worker`); `PairJudge` and
`RewardScorer` are callable classes for `Dataset.map_batches` (`charter.ray.data`). Ray is an
optional extra (`pip install 'charter[ray]'`): this package imports it only where it is used,
and `require_ray` says in one line how to install it. See docs/scale.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import DataJudgeSettings, PairJudge, RewardScorer

__all__ = ["DataJudgeSettings", "PairJudge", "RewardScorer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import data

        return getattr(data, name)
    raise AttributeError(f"module 'charter.ray' has no attribute {name!r}")
