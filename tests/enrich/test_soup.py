"""Model soup: the weight average that the shipped sentiment model is made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from enrich.training.soup import WEIGHTS, average_state, soup


def _run(root: Path, name: str, scale: float, extra: bool = False) -> None:
    best = root / name / "best"
    best.mkdir(parents=True)
    tensors = {
        "encoder.weight": np.full((3, 4), scale, dtype=np.float32),
        "head.bias": np.arange(3, dtype=np.float32) * scale,
        "position_ids": np.arange(5, dtype=np.int64),
    }
    if extra:
        tensors["other.weight"] = np.zeros(2, dtype=np.float32)
    save_file(tensors, str(best / WEIGHTS))
    (best / "config.json").write_text("{}")


def test_average_is_elementwise_mean_of_floats_and_keeps_integer_buffers(tmp_path: Path) -> None:
    _run(tmp_path, "a", 1.0)
    _run(tmp_path, "b", 2.0)
    _run(tmp_path, "c", 6.0)
    avg = average_state([tmp_path / r / "best" / WEIGHTS for r in "abc"])
    assert avg["encoder.weight"].dtype == np.float32 and np.allclose(avg["encoder.weight"], 3.0)
    assert np.allclose(avg["head.bias"], [0.0, 3.0, 6.0])
    assert avg["position_ids"].dtype == np.int64 and list(avg["position_ids"]) == [0, 1, 2, 3, 4]


def test_mismatched_checkpoints_are_refused_by_name(tmp_path: Path) -> None:
    _run(tmp_path, "a", 1.0)
    _run(tmp_path, "b", 2.0, extra=True)
    with pytest.raises(ValueError, match="not soup ingredients"):
        average_state([tmp_path / r / "best" / WEIGHTS for r in "ab"])


def test_soup_refuses_missing_runs_before_writing_anything(tmp_path: Path) -> None:
    _run(tmp_path, "a", 1.0)
    with pytest.raises(FileNotFoundError, match="nope"):
        soup(["a", "nope"], "mix", out_root=tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        soup(["a"], "mix", out_root=tmp_path)
    assert not (tmp_path / "mix").exists()
    # and the averaged file round-trips through safetensors
    save_file(average_state([tmp_path / "a" / "best" / WEIGHTS] * 2), str(tmp_path / "x.safetensors"))
    assert np.allclose(load_file(str(tmp_path / "x.safetensors"))["encoder.weight"], 1.0)
