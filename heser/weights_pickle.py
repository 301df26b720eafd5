"""Load pickled weight files (dicts of numpy arrays) without letting the pickle run code.

A pickle names the callables that rebuild its objects; the standard ``pickle.load`` imports and
calls whatever it names, so a crafted file runs arbitrary code. ``load_array_pickle`` resolves
only the few globals numpy arrays are rebuilt from and refuses any other before it is imported.
"""

from __future__ import annotations

import codecs
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the array internals to numpy._core; old pickles name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

# (module, name) as written in the pickle -> the object it stands for. Plain dicts, lists,
# tuples, strings and numbers have opcodes of their own and need no global.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _multiarray._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # protocol 2 writes bytes (an array's buffer) as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): codecs.encode,
}


class WeightsPickleError(ValueError):
    """A weights pickle could not be read or asked for something other than arrays."""


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, path: Path):
        super().__init__(fh)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsPickleError(
                f"{self.path}: refused global {module}.{name} (only numpy arrays and plain "
                "containers may be unpickled from a weights file)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsPickleError(f"{self.path}: refused persistent id {pid!r}")


def load_array_pickle(path: Path) -> Any:
    """The pickled object in ``path``, built only from arrays, numpy scalars and containers."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, path).load()
    except WeightsPickleError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise WeightsPickleError(f"{path}: not a readable weights pickle: {exc}") from exc
    _check_no_objects(obj, path)
    return obj


def _check_no_objects(obj: Any, path: Path) -> None:
    """Object-dtype arrays hold arbitrary Python objects: not weights."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise WeightsPickleError(f"{path}: array of dtype object is not a weight")
    if isinstance(obj, dict):
        for value in obj.values():
            _check_no_objects(value, path)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_no_objects(value, path)


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array} (the Flax parameter-tree layout)."""
    if isinstance(tree, np.ndarray):
        return {prefix: tree}
    if not isinstance(tree, dict):
        raise WeightsPickleError(f"{prefix or 'root'}: expected a dict or an array, "
                                 f"got {type(tree).__name__}")
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat
