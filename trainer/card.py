"""The model card: what a trained model was made from, so its behaviour can be traced back.

`README.md` in the output directory (replacing TRL's generic draft) records the data source,
the generation job(s), the constitution digest and version, the judge, the method and its key
hyperparameters, and the final metrics. `charter_training.json` holds the same facts for
machines (`charter eval` and scripts read it rather than parsing markdown).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .data import PreferenceData

CARD_JSON = "charter_training.json"

TRAINERS = {
    "dpo": "trl.DPOTrainer",
    "reward": "trl.RewardTrainer",
    "ppo": "trl.experimental.ppo.PPOTrainer",
    "grpo": "trl.GRPOTrainer",
    "rloo": "trl.RLOOTrainer",
    "sft": "trl.SFTTrainer",
}
DATA_KINDS = {"sft": "prompt-completion data"}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("charter", "trl", "transformers", "torch", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def card_facts(
    *,
    method: str,
    base_model: str,
    data: PreferenceData,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the card says, as one JSON-ready dict. `trl_version` is the method's
    provenance: the same method trains differently across TRL releases."""
    versions = _versions()
    return {
        "method": method,
        "trainer": TRAINERS.get(method, method),
        "trl_version": versions.get("trl"),
        "base_model": base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "source": data.source,
            "job_id": data.job_id,
            "format": "conversational" if data.conversational else "standard",
            "rows": len(data.train),
            "held_out_rows": len(data.test or []),
            "dropped_rows": data.dropped,
            **data.provenance.as_dict(),
        },
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        **(extra or {}),
        "versions": versions,
    }


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "n/a"
    return str(value)


def render_card(facts: dict[str, Any]) -> str:
    data = facts["data"]
    trl = _value(facts.get("trl_version"))
    loaded = str(facts.get("base_model_path") or facts["base_model"])
    tags = ["charter", "trl", facts["method"], "rlaif", "constitutional-ai"]
    front = ["---", "library_name: transformers"]
    if not Path(loaded).exists():
        front.append(f"base_model: {loaded}")
    front += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    lines = [
        *front,
        f"# {facts['method'].upper()} model trained by charter",
        "",
        f"Trained with `{facts['trainer']}` (TRL {trl}) on "
        f"{DATA_KINDS.get(facts['method'], 'preference data')}"
        " made by charter's constitutional "
        "judge (RLAIF). The facts below trace it back to the data and the constitution.",
        "",
        "## Provenance",
        "",
        f"- Base model: `{facts['base_model']}`"
        + (f" (loaded from `{loaded}`)" if loaded != facts["base_model"] else ""),
        f"- Method: {facts['method']} (`{facts['trainer']}`, TRL {trl})",
        f"- Data: `{data['source']}` ({data['format']} format)",
        f"- Generation job: {_value(data['jobs'] or None)}",
        f"- Constitution digest: {_value(data['constitution_digests'] or None)}",
        f"- Constitution version: {_value(data['constitution_versions'] or None)}",
        f"- Judge: {_value(data['judges'] or None)}",
        f"- Policy that sampled the candidates: {_value(data['policies'] or None)}",
        f"- Rows: {data['rows']} trained on, {data['held_out_rows']} held out, "
        f"{data['dropped_rows']} dropped as unusable",
    ]
    if data["sources"]:
        kinds = ", ".join(f"{n} {k}" for k, n in data["sources"].items())
        lines.append(f"- Row sources: {kinds}")
    online = facts.get("online_judge")
    if online:
        lines += [
            f"- Online reward judge: {online.get('judge')} under constitution "
            f"{online.get('constitution_version')} ({online.get('constitution_digest')}), "
            f"reward mode {online.get('reward_mode')}",
        ]
    if facts.get("reward_model"):
        lines.append(f"- Reward model: `{facts['reward_model']}`")
        rm_data = facts.get("reward_model_data") or {}
        if rm_data:
            origin = _value(rm_data.get("jobs") or rm_data.get("source"))
            lines.append(
                f"- Reward model trained on: {origin}, "
                f"constitution {_value(rm_data.get('constitution_versions') or None)} "
                f"({_value(rm_data.get('constitution_digests') or None)}), "
                f"judge {_value(rm_data.get('judges') or None)}"
            )
    lines += ["", "## Hyperparameters", "", "| name | value |", "| --- | --- |"]
    lines += [f"| {k} | {_value(v)} |" for k, v in facts["hyperparameters"].items()]
    lines += ["", "## Results", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_value(v)} |" for k, v in facts["metrics"].items()]
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    lines += ["", f"Software: {versions}.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, facts: dict[str, Any]) -> Path:
    """Write README.md and charter_training.json into `out_dir`; return the README path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CARD_JSON).write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    readme = out / "README.md"
    readme.write_text(render_card(facts), encoding="utf-8")
    return readme


def read_training_facts(model_dir: str | Path) -> dict[str, Any] | None:
    """The facts a charter-trained model recorded, or None for a model charter did not train."""
    path = Path(model_dir) / CARD_JSON
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
