"""SIGKILL `charter serve` mid-job; the restarted service finishes the job, losing nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from charter.cli.main import cli
from charter.client import CharterClient
from charter.settings import LEASE_TTL_ENV
from tests.support.generation import PROMPTS, bad, good, responder, write_constitution
from tests.support.scripted_server import ScriptedJudgeServer
from tests.support.service import (
    TOKEN_A,
    ServiceProcess,
    request_call,
    stored_calls,
)


def test_sigkill_mid_job_then_restart_completes_with_no_duplicate_or_lost_rows(
    tmp_path: Path,
) -> None:
    principles = write_constitution(tmp_path / "principles")
    store = tmp_path / "service.db"
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        models = [
            "--judge", "openai:scripted", "--policy", "openai:scripted",
            "--judge-base-url", server.base_url, "--policy-base-url", server.base_url,
        ]  # fmt: skip
        service = ServiceProcess(
            ["--store", str(store), "--dir", str(principles), "--concurrency", "2", *models],
            {"CHARTER_API_TOKENS": TOKEN_A, LEASE_TTL_ENV: "2"},  # a killed run's lease: 2 s
            tmp_path / "service.log",
            tmp_path,
        )
        try:
            service.start()
            with CharterClient(service.base_url, TOKEN_A) as client:
                job_id = client.create_job(PROMPTS).job.id
                deadline = time.monotonic() + 30
                while server.calls < 14 and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert client.job(job_id).state == "running", "finished before the kill"
            service.kill()
            finished = stored_calls(store)
            killed_at = len(server.log)
            assert finished, "some calls were committed before the kill"

            service.start()
            with CharterClient(service.base_url, TOKEN_A) as client:
                done = client.wait_for_job(job_id, timeout=60)
                rows = list(client.preferences(job_id, limit=3))
            assert done.state == "done" and done.prompts.done == len(PROMPTS)
            again = [request_call(r.body) for r in server.log[killed_at:]]
            assert again, "the restarted service resumed the job by itself"
            assert not finished & set(again), "a finished model call was made again"
        finally:
            service.stop()

        # The same job run without interruption by the CLI, on a fresh store.
        fresh = tmp_path / "fresh.db"
        out = tmp_path / "fresh.jsonl"
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        result = CliRunner().invoke(
            cli,
            ["generate", "--prompts", str(prompts), "--dir", str(principles), "--store",
             str(fresh), *models, "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        cli_job = json.loads(result.stdout)["job_id"]
        assert cli_job != job_id  # the service's job is its token's, not the CLI's
        assert CliRunner().invoke(cli, ["export", cli_job, "--store", str(fresh), "--out",
                                        str(out)]).exit_code == 0  # fmt: skip
    uninterrupted = [json.loads(line) for line in out.read_text().splitlines()]

    assert len(rows) == len(PROMPTS)
    triples = [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    assert len(set(triples)) == len(triples)  # no duplicate
    assert set(triples) == {(p, good(p), bad(p)) for p in PROMPTS}  # none lost
    assert [{**r, "job_id": cli_job} for r in rows] == uninterrupted  # the same rows
    log = service.log
    assert "resuming job-" in log and "Traceback" not in log and TOKEN_A not in log
