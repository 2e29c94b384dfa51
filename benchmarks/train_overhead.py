"""What charter's DPO costs over a plain TRL script: wall time and peak memory, same run.

Both sides train the same tiny model (built here, no hub) on the same 64 preference pairs with
the same settings, each in its own fresh Python process so neither inherits the other's imports
or allocations:

- charter: `python -m charter.cli train dpo --data prefs.jsonl ...` (data checks, model checks,
  logging callback, model card);
- plain: a short script calling `trl.DPOTrainer` directly, as a user would without charter.

Runs alternate (plain, charter, charter, plain, ...) after one untimed warm-up, so page-cache
and machine-load drift fall on both sides. Reported per side: the median process wall time,
the median `trainer.train()` time, and the peak RSS of the process (`wait4` rusage, exact per
child). Target: charter / plain wall time <= 1.05.

    .venv/bin/python benchmarks/train_overhead.py [--rounds 3] [--steps 40] [--rows 64]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Timed runs per side (x2, ABBA).")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_chat_model(tmp / "model")
        data = tmp / "prefs.jsonl"
        write_data(data, args.rows)
        script = tmp / "plain_dpo.py"
        script.write_text(PLAIN_SCRIPT)
        common = [str(args.steps), str(args.batch)]
        plain = [sys.executable, str(script), str(data), str(model), str(tmp / "plain"), *common]
        charter = [
            sys.executable, "-m", "charter.cli", "train", "-q", "dpo", "--data", str(data),
            "--model", str(model), "--out", str(tmp / "charter"), "--overwrite",
            "--max-steps", str(args.steps), "--batch-size", str(args.batch), "--lr", "1e-3",
            "--logging-steps", "10", "--set", "save_strategy='no'",
            "--set", "gradient_checkpointing=false", "--json",
        ]  # fmt: skip
        sides = {"plain": plain, "charter": charter}
        run(plain, env, tmp)  # warm-up: page cache for imports and the model files
        results: dict[str, list[dict[str, float]]] = {"plain": [], "charter": []}
        for n in range(args.rounds):
            order = ["plain", "charter"] if n % 2 == 0 else ["charter", "plain"]
            for name in order + order[::-1]:
                results[name].append(run(sides[name], env, tmp))
                last = results[name][-1]
                print(
                    f"  {name:<8} wall {last['wall_s']:6.2f} s  cpu {last['cpu_s']:6.2f} s  "
                    f"train {last['train_s']:6.2f} s  "
                    f"peak RSS {last['peak_rss_mib']:7.1f} MiB",
                    flush=True,
                )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def peak(name: str) -> float:
        return max(r["peak_rss_mib"] for r in results[name])

    print(
        f"\nDPO, tiny Llama, {args.rows} pairs, {args.steps} steps, batch {args.batch}, "
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
    verdict = "meets" if wall_ratio <= 1.05 else "misses"
    print(f"  wall time ratio charter/plain: {wall_ratio:.3f} ({verdict} the <= 1.05 target)")
    print(f"  CPU time ratio (user+sys):     {cpu_ratio:.3f}")
    print(f"  train() time ratio:            {train_ratio:.3f}")
    print(f"  peak memory ratio:             {rss_ratio:.3f}")


if __name__ == "__main__":
    main()
