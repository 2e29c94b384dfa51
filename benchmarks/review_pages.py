"""Page times of the review pages for a job of 100,000 rows (issue 15).

Builds a store with one job of 50,000 prompts and 100,000 preference rows, cloned from a real
job run by the scripted judge (so the stored results have their real shape and size), serves
it with `charter serve`'s app on loopback, signs in, and times each page: the first rows page,
a filtered page, a page deep in the job, the job page (its charts and audit figures), the
labelling page and the progress JSON. Times are wall-clock per request at the client on
loopback, so they bound the server's time from above. Target: each under 300 ms.

    .venv/bin/python benchmarks/review_pages.py [--rows 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from charter.cli.main import cli  # noqa: E402
from charter.jobs.store import JOB_PROMPTS, JOBS, PREFERENCES  # noqa: E402
from charter.service import records  # noqa: E402
from charter.service.settings import ServiceSettings, owner_of  # noqa: E402
from charter.store import open_store  # noqa: E402
from tests.support.generation import make_world, responder  # noqa: E402
from tests.support.scripted_server import ScriptedJudgeServer  # noqa: E402
from tests.support.service import TOKEN_A, running_service  # noqa: E402

JOB = "job-00000000be1c"
TARGET_MS = 300.0


def build(root: Path, rows: int) -> Path:
    """A store whose job JOB has `rows` preference rows (two per prompt)."""
    world = make_world(root)
    with ScriptedJudgeServer(responder()) as server:
        result = CliRunner().invoke(
            cli,
            ["generate", "--prompts", str(world["prompts"]), "--dir", str(world["principles"]),
             "--store", str(world["store"]), "--judge", "openai:scripted", "--policy",
             "openai:scripted", "--judge-base-url", server.base_url, "--policy-base-url",
             server.base_url, "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    source = json.loads(result.stdout)["job_id"]
    db = open_store(world["store"])
    records.ensure_tables(db)
    job = dict(next(db[JOBS].rows_where("id = ?", [source])))
    prompt = dict(next(db[JOB_PROMPTS].rows_where("job_id = ?", [source], limit=1)))
    template = dict(next(db[PREFERENCES].rows_where("job_id = ?", [source], limit=1)))
    db[JOBS].insert({**job, "id": JOB})  # type: ignore[union-attr]
    rng = random.Random(0)
    principles = ["helpful", "honest", "harmless"]
    prompts = rows // 2
    with db.conn:
        db[JOB_PROMPTS].insert_all(  # type: ignore[union-attr]
            ({**prompt, "job_id": JOB, "position": i} for i in range(prompts)), batch_size=2000
        )
        db[PREFERENCES].insert_all(  # type: ignore[union-attr]
            (
                {
                    **template,
                    "key": hashlib.sha256(f"{i}:{j}".encode()).hexdigest(),
                    "job_id": JOB,
                    "position": i,
                    "p_chosen": rng.uniform(0.5, 1.0),
                    "source": "revision" if rng.random() < 0.2 else "comparison",
                    "position_consistent": int(rng.random() < 0.9),
                    "principles": json.dumps(rng.sample(principles, 2)),
                }
                for i in range(prompts)
                for j in range(2)
            ),
            batch_size=2000,
        )
    records.add_owner(db, JOB, owner_of(TOKEN_A))
    db.close()
    return world["store"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="charter-review-bench-") as tmp:
        started = time.perf_counter()
        store = build(Path(tmp), args.rows)
        print(f"built a job of {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
        settings = ServiceSettings(
            store_path=store,
            principles_dir=Path(tmp) / "principles",
            tokens=(SecretStr(f"bench={TOKEN_A}"),),
            preload_judge=False,
        )
        deep = records.encode_cursor((args.rows // 2 - 30, ""))
        pages = {
            "rows: first page": f"/pages/jobs/{JOB}/rows",
            "rows: filtered (principle, p_chosen >= 0.8, kept)": (
                f"/pages/jobs/{JOB}/rows?principle=honest&min_p=0.8&reason=kept"
            ),
            "rows: filtered (position-inconsistent revisions)": (
                f"/pages/jobs/{JOB}/rows?source=revision&reason=position_inconsistent"
            ),
            "rows: a page at the end of the job": f"/pages/jobs/{JOB}/rows?after={deep}",
            "job page (charts, audit figures)": f"/pages/jobs/{JOB}",
            "label a sample": f"/pages/jobs/{JOB}/label",
            "progress JSON": f"/pages/jobs/{JOB}/progress.json",
        }
        with (
            running_service(settings) as service,
            httpx.Client(base_url=service.base_url, timeout=60) as client,
        ):
            signed = client.post("/pages/sign-in", data={"token": TOKEN_A})
            assert signed.status_code == 303, signed.text
            print(f"| page | median ms | p95 ms | max ms | under {TARGET_MS:.0f} ms |")
            print("| --- | ---: | ---: | ---: | --- |")
            for name, path in pages.items():
                times = []
                for _ in range(args.repeat + 1):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, (path, response.text[:300])
                times = sorted(times[1:])  # the first request warms caches
                p95 = times[max(0, int(len(times) * 0.95) - 1)]
                ok = "yes" if p95 < TARGET_MS else "**no**"
                print(
                    f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | "
                    f"{times[-1]:.1f} | {ok} |"
                )


if __name__ == "__main__":
    main()
