"""How many threads torch may use: a fair share of the cores, not all of them, when other
processes are busy on the same machine.

torch starts one intra-op thread per core. Two torch processes on the same cores then each run
as many threads as there are cores, and their threads spin waiting for each other at every
parallel region: on 2 shared cores the demo's batched generation ran 40 minutes against
another torch process. A local model therefore takes the cores the load average leaves free
(at least one) when it loads, unless `CHARTER_TORCH_THREADS` says how many.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charter.common.environment import model_from_env

log = logging.getLogger(__name__)

TORCH_THREADS_ENV = "CHARTER_TORCH_THREADS"


class ThreadSettings(BaseModel):
    """Threads for a local model's torch work."""

    model_config = ConfigDict(frozen=True)

    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Intra-op threads torch may use for a local model; unset or 'auto': the "
        "cores the 1-minute load average leaves free when the model loads (at least 1), so "
        "torch processes sharing cores do not oversubscribe them.",
    )

    @field_validator("torch_threads", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ThreadSettings:
        return model_from_env(cls, {"torch_threads": TORCH_THREADS_ENV}, env)

    def threads(self, cores: int | None = None, load: float | None = None) -> int:
        """The thread count to use now: the setting, else the fair share of the cores."""
        if self.torch_threads is not None:
            return self.torch_threads
        return fair_share(
            cores if cores is not None else available_cores(),
            load if load is not None else os.getloadavg()[0],
        )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fair_share(cores: int, load: float) -> int:
    """The cores not already busy (load rounded), at least 1 and at most `cores`."""
    return max(1, min(cores, cores - round(load)))


def use_torch_threads(settings: ThreadSettings | None = None) -> int:
    """Set torch's intra-op threads for the calling thread's work and return the count. Call
    it on the thread that runs the model (OpenMP keeps the count per thread)."""
    import torch

    threads = (settings or ThreadSettings.from_env()).threads()
    torch.set_num_threads(threads)
    log.info("torch uses %d thread(s) (load %.1f on %d cores)", threads,
             os.getloadavg()[0], available_cores())  # fmt: skip
    return threads
