"""How `charter generate --ray` runs a job on a Ray cluster (declared once here; the CLI's
options come from these fields). Not part of a job's id: a job makes the same rows in one
process or on any number of workers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

LOCAL = "local"
"""The `--ray` value that starts a Ray instance on this machine for the run (`--ray` alone)."""


class RayOptions(BaseModel):
    """Where the job's workers run, how many, and how many prompts each is dealt at a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ray: str | None = Field(
        default=None,
        description="Deal the job's prompts to Ray workers: `--ray` alone starts a local Ray "
        "for the run; `--ray auto` joins the cluster this machine belongs to; `--ray "
        "HOST:PORT` or `--ray ray://HOST:PORT` joins that one. The store, the lease and "
        "the job id stay with this process (needs the ray extra: pip install 'charter[ray]').",
        json_schema_extra={"flag_value": LOCAL, "metavar": "[ADDRESS]"},
    )
    ray_workers: int = Field(
        default=2,
        ge=1,
        le=1024,
        description="Ray workers (actors) the job is dealt to; each opens its own model "
        "clients, with --concurrency requests in flight per endpoint.",
    )
    ray_shard: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Prompts dealt to a worker at a time (a shard); a worker holds enough "
        "shards for --concurrency prompts in flight and one more, so it never waits for work.",
    )
