"""Tiny chat models built from scratch for tests: no hub, no network, a few seconds on 2 cores.

The model is random (it says nothing sensible), but it is a real Llama with a real byte-level
BPE tokenizer and a ChatML chat template, so every code path a real judge or policy takes —
chat templating, padding, forward passes, generation, saving and loading — runs for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

VOCAB_SIZE = 512

# Enough varied English for the BPE trainer to learn common merges (including " A" / " B").
_CORPUS = """
Which response is more helpful, honest and harmless? Answer with A or B.
Response A is better. Response B is better. The answer is A. The answer is B.
Please critique the response below and identify anything harmful, unethical or dishonest.
Rewrite the response to remove any harmful, unethical, racist, sexist or illegal content.
The assistant should be helpful to the user while avoiding dangerous advice.
Explain how photosynthesis works in simple terms for a ten year old child.
Plants use sunlight, water and carbon dioxide to make sugar and release oxygen.
I cannot help with that request, but here is some safer information instead.
What is the capital of France? The capital of France is Paris.
How do I bake bread at home? Mix flour, water, salt and yeast, knead, rise, then bake.
Tell me a joke about computers. Why did the computer go to the doctor? It had a virus.
The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.
Summarise the following text in one sentence and keep every important fact.
A good answer is clear, correct, concise and kind; a bad answer is vague or misleading.
system user assistant: you are a careful judge. Think step by step, then give a verdict.
"""


def _corpus() -> list[str]:
    lines = [line for line in _CORPUS.strip().splitlines() if line]
    # Letters and digits in many contexts so single-letter options are common tokens.
    extra = [f"Option {c} or option {d}." for c in "ABCD" for d in "ABCD"]
    return (lines + extra) * 8


def _build_tokenizer() -> Any:
    """Train a byte-level BPE tokenizer and wrap it as a fast HF tokenizer with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        padding_side="left",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_chat_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a random tiny Llama chat model and its tokenizer to `out_dir`; return `out_dir`.

    Deterministic for a given seed: the same weights and vocabulary every time.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    vocab_size = len(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|pad|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|im_start|>")

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model: Any = LlamaForCausalLM(config)  # float32 by default
    model.eval()
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat model directory shared by the whole test session (built once, ~1 s)."""
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))
