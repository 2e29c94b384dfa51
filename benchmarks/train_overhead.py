"""What `charter train dpo|rloo` costs over a plain TRL script: wall time and peak memory.

Both sides train the same tiny model (built here, no hub) on the same 64 preference pairs with
the same settings, each in its own fresh Python process so neither inherits the other's imports
or allocations:

- charter: `python -m charter.cli train dpo|rloo --data prefs.jsonl ...` (data checks, model
  checks, logging callback, model card);
- plain: a short script calling `trl.DPOTrainer` / `trl.RLOOTrainer` directly, as a user would
  without charter. RLOO's reward on both sides is the constitution judge (a scripted judge
  server on loopback, in this process, answering at once) against each prompt's chosen answer:
  the plain script takes it as TRL users do, `charter.rewards.ConstitutionRewards(...)
  .trl_reward_func()`, so the difference measured is `charter train`'s own work around TRL.

Runs alternate (plain, charter, charter, plain, ...) after one untimed warm-up, so page-cache
and machine-load drift fall on both sides. Reported per side: the median process wall time,
the median `trainer.train()` time, and the peak RSS of the process (`wait4` rusage, exact per
child). Target: charter / plain wall time <= 1.05, judged on the median of the rounds' own
ratios (each round's two runs per side against each other, so drift between rounds cancels);
single runs of either side vary by up to 30% on a shared VM, so read the range beside it.

    .venv/bin/python benchmarks/train_overhead.py [--method dpo|rloo|all] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.generation import write_constitution  # noqa: E402
from tests.support.scripted_server import (  # noqa: E402
    Reply,
    ScriptedJudgeServer,
    last_user_message,
)
from tests.support.tiny_models import build_tiny_chat_model  # noqa: E402

PLAIN_SCRIPT = """
import json, sys, time
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

data, model_dir, out, steps, batch = sys.argv[1:6]
rows = [json.loads(line) for line in open(data)]
dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
ref = AutoModelForCausalLM.from_pretrained(model_dir)
args = DPOConfig(
    output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch),
    learning_rate=1e-3, logging_steps=10, save_strategy="no", gradient_checkpointing=False,
    bf16=False, use_cpu=True, report_to="none", disable_tqdm=True,
)
trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset,
                     processing_class=tokenizer)
started = time.perf_counter()
trainer.train()
train_s = time.perf_counter() - started
trainer.save_model(out)
print(json.dumps({"train_s": train_s}))
"""


PLAIN_RLOO = """
import json, sys, time
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import RLOOConfig, RLOOTrainer
from charter.rewards import ConstitutionRewards

data, model_dir, out, steps, batch, judge_url, principles = sys.argv[1:8]
rows = [json.loads(line) for line in open(data)]
dataset = Dataset.from_list([{"prompt": r["prompt"], "reference": r["chosen"]} for r in rows])
rewards = ConstitutionRewards(judge="openai:scripted", judge_base_url=judge_url,
                              principles=principles)
args = RLOOConfig(
    output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch),
    num_generations=4, max_completion_length=8, beta=0.05, learning_rate=1e-4,
    logging_steps=10, save_strategy="no", gradient_checkpointing=False,
    bf16=False, use_cpu=True, report_to="none", disable_tqdm=True,
)
trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                      reward_funcs=[rewards.trl_reward_func()], args=args,
                      train_dataset=dataset,
                      processing_class=AutoTokenizer.from_pretrained(model_dir))
started = time.perf_counter()
trainer.train()
train_s = time.perf_counter() - started
trainer.save_model(out)
rewards.close()
print(json.dumps({"train_s": train_s}))
"""


def judge_reply(body: dict[str, object]) -> Reply:
    """A verdict for every comparison ("A", confident); plain text for anything else."""
    if "<<<RESPONSE_A" not in last_user_message(body):  # type: ignore[arg-type]
        return Reply("Scripted text.")
    return Reply("A", top_logprobs=[("A", -0.105), ("B", -2.303)])


def write_data(path: Path, rows: int) -> None:
    with path.open("w") as f:
        for i in range(rows):
            row = {
                "prompt": f"Question {i}: how should I approach task {i} safely?",
                "chosen": f"A careful, helpful answer to task {i}, with the risks explained.",
                "rejected": f"A careless answer to task {i}.",
                "p_chosen": 0.9,
                "margin": 0.4,
                "job_id": "job-benchmark",
                "constitution_digest": "0" * 64,
                "constitution_version": "bench",
                "judge": "openai:scripted",
            }
            f.write(json.dumps(row) + "\n")


def run(cmd: list[str], env: dict[str, str], logs: Path) -> dict[str, float]:
    """Wall time, peak RSS (MiB) and the reported train() time of one child process."""
    with (logs / "out").open("w+") as out, (logs / "err").open("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()[-2000:]}")
    # The plain script prints TRL's log dicts first; charter prints one JSON document.
    text = lines[-1] if lines[-1].startswith('{"train_s"') else "\n".join(lines)
    report = json.loads(text)
    train_s = report.get("train_s") or report["metrics"]["train_runtime_s"]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "train_s": float(train_s),
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def measure(
    method: str, sides: dict[str, list[str]], env: dict[str, str], tmp: Path, args: Any
) -> None:
    """Alternate the two sides (ABBA) after a warm-up; print each run and the medians."""
    run(sides["plain"], env, tmp)  # warm-up: page cache for imports and the model files
    results: dict[str, list[dict[str, float]]] = {"plain": [], "charter": []}
    round_ratios: list[float] = []  # charter / plain wall time within each ABBA round
    for n in range(args.rounds):
        order = ["plain", "charter"] if n % 2 == 0 else ["charter", "plain"]
        walls: dict[str, list[float]] = {"plain": [], "charter": []}
        for name in order + order[::-1]:
            results[name].append(run(sides[name], env, tmp))
            walls[name].append(results[name][-1]["wall_s"])
            last = results[name][-1]
            print(
                f"  {method} {name:<8} wall {last['wall_s']:6.2f} s  cpu {last['cpu_s']:6.2f} s  "
                f"train {last['train_s']:6.2f} s  peak RSS {last['peak_rss_mib']:7.1f} MiB",
                flush=True,
            )
        round_ratios.append(sum(walls["charter"]) / sum(walls["plain"]))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def peak(name: str) -> float:
        return max(r["peak_rss_mib"] for r in results[name])

    steps = args.rloo_steps if method == "rloo" else args.steps
    print(
        f"\n{method.upper()}, tiny Llama, {args.rows} pairs, {steps} steps, batch {args.batch}, "
        f"{len(results['plain'])} runs per side (medians):"
    )
    for name in ("plain", "charter"):
        print(
            f"  {name:<8} wall {median(name, 'wall_s'):6.2f} s  "
            f"cpu {median(name, 'cpu_s'):6.2f} s  train() {median(name, 'train_s'):6.2f} s  "
            f"peak RSS {peak(name):7.1f} MiB"
        )
    wall_ratio = median("charter", "wall_s") / median("plain", "wall_s")
    train_ratio = median("charter", "train_s") / median("plain", "train_s")
    cpu_ratio = median("charter", "cpu_s") / median("plain", "cpu_s")
    rss_ratio = peak("charter") / peak("plain")
    paired = statistics.median(round_ratios)
    verdict = "meets" if paired <= 1.05 else "misses"
    print(f"  wall time ratio charter/plain: {wall_ratio:.3f} (medians of all runs)")
    print(
        f"  paired by round (ABBA):        {paired:.3f} median of {len(round_ratios)} rounds, "
        f"range {min(round_ratios):.3f}-{max(round_ratios):.3f} ({verdict} the <= 1.05 target)"
    )
    print(f"  CPU time ratio (user+sys):     {cpu_ratio:.3f}")
    print(f"  train() time ratio:            {train_ratio:.3f}")
    print(f"  peak memory ratio:             {rss_ratio:.3f}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["dpo", "rloo", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="Timed runs per side (x2, ABBA).")
    parser.add_argument("--steps", type=int, default=40, help="DPO steps.")
    parser.add_argument("--rloo-steps", type=int, default=8, help="RLOO steps.")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with tempfile.TemporaryDirectory() as tmp_name, ScriptedJudgeServer(judge_reply) as judge:
        tmp = Path(tmp_name)
        model = build_tiny_chat_model(tmp / "model")
        principles = write_constitution(tmp / "principles")
        data = tmp / "prefs.jsonl"
        write_data(data, args.rows)
        (tmp / "plain_dpo.py").write_text(PLAIN_SCRIPT)
        (tmp / "plain_rloo.py").write_text(PLAIN_RLOO)
        shared = ["--overwrite", "--batch-size", str(args.batch), "--logging-steps", "10",
                  "--set", "save_strategy='no'", "--set", "gradient_checkpointing=false",
                  "--json"]  # fmt: skip
        runs = {
            "dpo": {
                "plain": [sys.executable, str(tmp / "plain_dpo.py"), str(data), str(model),
                          str(tmp / "plain"), str(args.steps), str(args.batch)],
                "charter": [sys.executable, "-m", "charter.cli", "train", "-q", "dpo",
                            "--data", str(data), "--model", str(model),
                            "--out", str(tmp / "charter"), "--max-steps", str(args.steps),
                            "--lr", "1e-3", *shared],
            },
            "rloo": {
                "plain": [sys.executable, str(tmp / "plain_rloo.py"), str(data), str(model),
                          str(tmp / "plain-rloo"), str(args.rloo_steps), str(args.batch),
                          judge.base_url, str(principles)],
                "charter": [sys.executable, "-m", "charter.cli", "train", "-q", "rloo",
                            "--data", str(data), "--model", str(model),
                            "--out", str(tmp / "charter-rloo"),
                            "--max-steps", str(args.rloo_steps), "--lr", "1e-4",
                            "--num-generations", "4", "--max-completion-length", "8",
                            "--beta", "0.05", "--reward-mode", "reference",
                            "--judge", "openai:scripted", "--judge-base-url", judge.base_url,
                            "--dir", str(principles), *shared],
            },
        }  # fmt: skip
        for method in ("dpo", "rloo") if args.method == "all" else (args.method,):
            measure(method, runs[method], env, tmp, args)


if __name__ == "__main__":
    main()
