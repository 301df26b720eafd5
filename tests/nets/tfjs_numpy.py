"""A small, slow numpy interpreter of TF.js graph models: the test-time reference for
heser.nets.faceres.

It shares no code with the port: it reads model.json and the weight files itself, then walks
the node list in dependency order and runs each op as TensorFlow defines it, in float64, with
plain loops over kernel taps. It knows the ops of FaceRes's graph and raises on any other.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

_STORED = {"float32": "<f4", "int32": "<i4", "float16": "<f2", "uint8": "u1", "uint16": "<u2"}


def load_constants(model_json: Path) -> dict[str, np.ndarray]:
    manifest = json.loads(model_json.read_text())["weightsManifest"]
    constants = {}
    for group in manifest:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization") or {}
            stored = np.dtype(_STORED[quant.get("dtype", spec["dtype"])])
            count = int(np.prod(spec["shape"], dtype=np.int64))
            values = np.frombuffer(data, stored, count, offset)
            offset += count * stored.itemsize
            if "scale" in quant:
                values = values * quant["scale"] + quant["min"]
            dtype = np.float64 if spec["dtype"] == "float32" else np.int64
            constants[spec["name"]] = values.astype(dtype).reshape(spec["shape"])
        assert offset == len(data), (offset, len(data))
    return constants


def _ints(node: dict, key: str) -> list[int]:
    return [int(i) for i in node["attr"][key]["list"]["i"]]


def _text(node: dict, key: str) -> str:
    return base64.b64decode(node["attr"][key]["s"]).decode()


def _pad_same(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Zero padding of NHWC ``x`` as TensorFlow's 'SAME': an odd total puts the extra row or
    column at the bottom / right."""
    pads = []
    for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _taps(node: dict, x: np.ndarray, kh: int, kw: int):
    """(dy, dx, the strided input window seen by tap dy, dx) for a 'SAME' NHWC conv."""
    assert _text(node, "padding") == "SAME" and _text(node, "data_format") == "NHWC"
    assert set(_ints(node, "dilations")) == {1}
    _, sy, sx, _ = _ints(node, "strides")
    assert sy == sx
    padded = _pad_same(x, kh, kw, sy)
    out_h, out_w = -(-x.shape[1] // sy), -(-x.shape[2] // sx)
    for dy in range(kh):
        for dx in range(kw):
            yield dy, dx, padded[:, dy:dy + sy * out_h:sy, dx:dx + sx * out_w:sx]


def conv2d(node: dict, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC input, HWIO kernel."""
    kh, kw = kernel.shape[:2]
    return sum(np.einsum("nhwi,io->nhwo", window, kernel[dy, dx])
               for dy, dx, window in _taps(node, x, kh, kw))


def depthwise_conv2d(node: dict, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC input, kernel (kh, kw, C, M): output channel c * M + m."""
    kh, kw, channels, multiplier = kernel.shape
    out = sum(window[..., :, None] * kernel[dy, dx] for dy, dx, window in _taps(node, x, kh, kw))
    return out.reshape(*out.shape[:3], channels * multiplier)


def fused_matmul(node: dict, a: np.ndarray, b: np.ndarray, *args: np.ndarray) -> np.ndarray:
    assert not node["attr"]["transpose_a"]["b"] and not node["attr"]["transpose_b"]["b"]
    out = a @ b
    for op in (base64.b64decode(s).decode() for s in node["attr"]["fused_ops"]["list"]["s"]):
        if op == "BiasAdd":
            out = out + args[0]
        elif op == "Relu":
            out = np.maximum(out, 0)
        else:
            raise NotImplementedError(f"fused op {op}")
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _mean(node: dict, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    keep = node["attr"].get("keep_dims", {}).get("b", False)
    return x.mean(axis=tuple(int(a) for a in np.ravel(axes)), keepdims=keep)


_OPS = {
    "Conv2D": conv2d,
    "DepthwiseConv2dNative": depthwise_conv2d,
    "_FusedMatMul": fused_matmul,
    "Add": lambda node, a, b: a + b,
    "Mul": lambda node, a, b: a * b,
    "Minimum": lambda node, a, b: np.minimum(a, b),
    "Maximum": lambda node, a, b: np.maximum(a, b),
    "Relu": lambda node, x: np.maximum(x, 0),
    "Sigmoid": lambda node, x: 1 / (1 + np.exp(-x)),
    "Softmax": lambda node, x: softmax(x),
    "Mean": _mean,
}


def run_graph(model_json: Path, inputs: dict[str, np.ndarray],
              outputs: list[str]) -> dict[str, np.ndarray]:
    """Values of the ``outputs`` nodes for the ``inputs`` placeholders (name -> NHWC array)."""
    nodes = {n["name"]: n for n in json.loads(model_json.read_text())["modelTopology"]["node"]}
    values = {name: np.asarray(v, np.float64) for name, v in inputs.items()}
    constants = load_constants(model_json)

    def value(name: str) -> np.ndarray:
        name = name.split(":")[0]
        if name in values:
            return values[name]
        node = nodes[name]
        if node["op"] == "Const":
            values[name] = constants[name]
        else:
            args = [value(source) for source in node["input"]]
            values[name] = _OPS[node["op"]](node, *args)
        return values[name]

    return {name: value(name) for name in outputs}
