"""How many threads torch may use: a fair share of the cores, not all of them, when other
processes are busy on the same machine.

torch starts one intra-op thread per core. Two torch processes on the same cores then each run
as many threads as there are cores, and their threads spin waiting for each other at every
parallel region: on 2 shared cores the demo's batched generation ran 40 minutes against
another torch process, and 12 SFT steps took 281 s instead of 54 with one thread. A local
model (when it loads) and a training run (when `train()` starts) therefore take the cores
other processes leave free (at least one), unless `CHARTER_TORCH_THREADS` says how many.

"Other processes" is measured from /proc over a window, not read from the load average: the
1-minute average still counts a process that just finished (the demo's previous step, a test
that just ran) and this process itself, and would halve a quiet machine's threads. The window
can be work this process does anyway (a training run samples from the end of its input checks
to its first step, while it loads its models), so the measurement costs no waiting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charter.common.environment import model_from_env

log = logging.getLogger(__name__)

TORCH_THREADS_ENV = "CHARTER_TORCH_THREADS"


class ThreadSettings(BaseModel):
    """Threads for a local model's or a training run's torch work."""

    model_config = ConfigDict(frozen=True)

    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Intra-op threads torch may use for a local model or a training run; "
        "unset or 'auto': the cores other processes leave free when the model loads or "
        "training starts (at least 1), so torch processes sharing cores do not oversubscribe "
        "them.",
    )

    @field_validator("torch_threads", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ThreadSettings:
        return model_from_env(cls, {"torch_threads": TORCH_THREADS_ENV}, env)

    def threads(self, cores: int | None = None, busy: float | None = None) -> int:
        """The thread count to use now: the setting, else the fair share of the cores."""
        if self.torch_threads is not None:
            return self.torch_threads
        return fair_share(
            cores if cores is not None else available_cores(),
            busy if busy is not None else busy_elsewhere(),
        )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fair_share(cores: int, busy: float) -> int:
    """The cores not already busy (`busy` cores' worth, rounded), at least 1, at most `cores`."""
    return max(1, min(cores, cores - round(busy)))


class CpuSample:
    """Other processes' CPU time from a starting point: `start()`, do some work, then
    `busy_elsewhere()` says how many cores' worth they used meanwhile (this process's own work,
    all its threads, does not count)."""

    def __init__(self, busy: int, own: int, started: float) -> None:
        self._busy, self._own, self._started = busy, own, started

    @classmethod
    def start(cls) -> CpuSample | None:
        """A sample starting now; None where /proc is not there to read."""
        try:
            return cls(busy_ticks(), own_ticks(), time.monotonic())
        except (OSError, ValueError, IndexError):
            return None

    def busy_elsewhere(self, min_window_s: float = 0.25) -> float:
        """Cores' worth of CPU other processes used since `start()`, waiting first until the
        window is `min_window_s` long (a clock tick is 10 ms: shorter windows are noise)."""
        waited = time.monotonic() - self._started
        if waited < min_window_s:
            time.sleep(min_window_s - waited)
        others = (busy_ticks() - self._busy) - (own_ticks() - self._own)
        return cores_used(others, time.monotonic() - self._started)


def busy_elsewhere(window_s: float = 0.25) -> float:
    """How many cores' worth of CPU other processes used over the next `window_s` seconds
    (Linux /proc); where /proc is not there, the 1-minute load average."""
    sample = CpuSample.start()
    if sample is None:
        return os.getloadavg()[0]
    try:
        return sample.busy_elsewhere(window_s)
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def cores_used(ticks: int, window_s: float) -> float:
    """Clock ticks of CPU time spent over a window, as cores' worth of work."""
    return max(0.0, ticks / os.sysconf("SC_CLK_TCK") / window_s)


def busy_ticks(stat: str | None = None) -> int:
    """Clock ticks every core has spent busy since boot: /proc/stat's `cpu` line less idle and
    iowait (guest time is already inside user time)."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def own_ticks(stat: str | None = None) -> int:
    """Clock ticks this process (all its threads) has spent on a CPU: utime + stime of
    /proc/self/stat, read after the command name, which may hold spaces."""
    text = stat if stat is not None else Path("/proc/self/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def use_torch_threads(settings: ThreadSettings | None = None, busy: float | None = None) -> int:
    """Set torch's intra-op threads for the calling thread's work and return the count: the
    setting, else the fair share given `busy` cores' worth of other work (measured now when not
    given). Call it on the thread that runs the model (OpenMP keeps the count per thread)."""
    import torch

    threads = (settings or ThreadSettings.from_env()).threads(busy=busy)
    torch.set_num_threads(threads)
    log.info("torch uses %d thread(s) of %d cores", threads, available_cores())
    return threads


@contextmanager
def torch_threads_for_block(
    settings: ThreadSettings | None = None, busy: float | None = None
) -> Iterator[int]:
    """`use_torch_threads` for the length of a block, then torch's previous count again: a
    library call (a training run) must not leave the caller's process on fewer threads."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield use_torch_threads(settings, busy)
    finally:
        torch.set_num_threads(previous)
