"""What every shipped ONNX text model needs at run time, in one place.

A model folder holds `model.onnx`, `tokenizer.json` (a fast WordPiece tokenizer) and
`model_card.json`. `OnnxTextModel` loads them lazily (first use, once per process, thread-safe),
so importing a stage is cheap and cold start stays small; `feeds` pads token-id sequences into
the arrays onnxruntime takes. No torch at run time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

GROUP_TOKENS = 256
"""Padded tokens per ONNX call that run cheapest on the 2-core dev VM (2026-11-25, idle, MiniLM int8): a group's
activations then stay in cache. Sentiment (tweets, batch-32 calls): 32 rows 692-720 posts/s, 256 tokens 753-786;
insight encoder (posts up to 128 tokens): 8 rows 429-433 texts/s, 4 rows 446-463, 256 tokens 496-507."""


def length_groups(
    lengths: Sequence[int], max_batch: int, max_padding: float = 0.15, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped into padded batches of similar length, shortest first.

    Sorting alone is not enough for a 32-post call of random tweets (8 to 60 tokens): one padded batch
    then computes ~45 % padding. A group grows while its padded area stays within ``max_padding`` of
    its real tokens, up to ``max_batch`` rows and ``max_tokens`` padded tokens (a row wider than that
    runs alone), so short calls split into a few tight batches.
    Only valid for batch-invariant models, where grouping cannot change a result.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    group: list[int] = []
    tokens = 0
    for i in order:
        width = lengths[i]  # sorted: the newcomer is the widest
        full = len(group) >= max_batch or (max_tokens is not None and width * (len(group) + 1) > max_tokens)
        if group and (full or width * (len(group) + 1) > (1 + max_padding) * (tokens + width)):
            groups.append(group)
            group, tokens = [], 0
        group.append(i)
        tokens += width
    if group:
        groups.append(group)
    return groups


def spread_groups(groups: list[list[int]], workers: int) -> list[list[int]]:
    """Split the largest groups in halves until every worker has one (a batch-1 call stays one group).

    Only for batch-invariant models: a row's result does not depend on the rows run beside it.
    """
    groups = [list(g) for g in groups]
    while len(groups) < workers:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]), default=None)
        if largest is None or len(groups[largest]) < 2:
            break
        group = groups.pop(largest)
        half = len(group) // 2
        groups[largest:largest] = [group[:half], group[half:]]
    return groups


def read_card(model_dir: Path) -> dict[str, Any]:
    """`model_card.json` of a model folder, {} when absent or unreadable (the version then says "missing")."""
    try:
        data: dict[str, Any] = json.loads((model_dir / "model_card.json").read_text("utf-8"))
        return data
    except (OSError, ValueError):
        return {}


class OnnxTextModel:
    """An onnxruntime session + fast tokenizer from a model folder, loaded on first `load()`.

    ``workers`` > 1 runs independent padded batches concurrently (`run_batches`), each on one
    onnxruntime thread: a tweet-sized batch is too small to keep two intra-op threads busy (they
    spend their time synchronising), two single-threaded runs side by side are not. ``memory_arena=False``
    drops onnxruntime's per-session arena, whose lock those concurrent runs share (faster for a small model,
    more RSS for a large one: see `enrich.sentiment`).
    """

    def __init__(
        self, model_dir: Path | str, *, model_file: str = "model.onnx", intra_op_threads: int = 2,
        missing_hint: str = "", workers: int = 1, memory_arena: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_file = model_file
        self.intra_op_threads = intra_op_threads
        self.workers = max(1, workers)
        self.memory_arena = memory_arena
        self._pool: ThreadPoolExecutor | None = None
        self.missing_hint = missing_hint
        self._lock = threading.Lock()
        self.session: Any = None
        self.tokenizer: Any = None
        self.card: dict[str, Any] = {}
        self.input_names: set[str] = set()
        self.cls = self.sep = self.pad = 0

    @property
    def loaded(self) -> bool:
        return self.session is not None

    def load(self) -> None:
        if self.session is not None:
            return
        with self._lock:
            if self.session is not None:
                return
            path = self.model_dir / self.model_file
            if not path.exists():  # checked before importing onnxruntime: a missing model costs nothing
                hint = f" ({self.missing_hint})" if self.missing_hint else ""
                raise FileNotFoundError(f"model not found: {path}{hint}")
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            tok.no_truncation()
            tok.no_padding()
            special = [tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")]
            if any(i is None for i in special):
                raise ValueError(f"{self.model_dir / 'tokenizer.json'} lacks [CLS]/[SEP]/[PAD]")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.intra_op_threads
            opts.inter_op_num_threads = 1
            # No busy-waiting: on a shared 2-core box spinning threads fight the other workers (measured
            # 109 → 157 texts/s with 2 threads on a loaded machine).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.enable_cpu_mem_arena = self.memory_arena
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            self.card = read_card(self.model_dir)
            self.cls, self.sep, self.pad = (int(i) for i in special if i is not None)
            self.input_names = {i.name for i in session.get_inputs()}
            self.tokenizer = tok
            self.session = session

    def feeds(self, seqs: Sequence[list[int]]) -> dict[str, np.ndarray]:
        """Right-padded input ids + attention mask (+ zero token types when the graph wants them)."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return feeds

    @property
    def batch_invariant(self) -> bool:
        """The card promises a text's result does not depend on its batch (checked at export)."""
        self.load()
        return bool(self.card.get("batch_invariant", False))

    def plan_groups(
        self, seqs: Sequence[list[int]], *, per_row: bool, max_batch: int, max_padding: float,
        max_tokens: int | None = GROUP_TOKENS,
    ) -> list[list[int]]:
        """Indices of `seqs` per ONNX call: one each when `per_row`, else length groups spread over the workers."""
        if per_row:
            return [[i] for i in range(len(seqs))]
        groups = length_groups([len(s) for s in seqs], max(1, max_batch), max_padding, max_tokens)
        return spread_groups(groups, self.workers)

    def run_batches(self, output: str, batches: Sequence[Sequence[list[int]]]) -> list[np.ndarray]:
        """``output`` of every padded batch, in order; concurrently on ``workers`` threads.

        onnxruntime's ``run`` is thread-safe and releases the GIL, so the threads really overlap.
        """
        def one(seqs: Sequence[list[int]]) -> np.ndarray:
            out: np.ndarray = self.session.run([output], self.feeds(seqs))[0]
            return out

        if self.workers == 1 or len(batches) < 2:
            return [one(b) for b in batches]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx")
        return list(self._pool.map(one, batches))
