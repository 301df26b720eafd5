"""BiSeNet face parser: checkpoint key layout, loading errors and parsing a real crop."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heser.face.bisenet import BiSeNet, BiSeNetParser
from heser.face.labels import Region
from heser.face.types import FaceBackendError

SAMPLE_CROP = Path("/work/shared/data/sample/images/dt_woman_D_crop256.png")

# Key names and shapes of the public face-parsing.PyTorch checkpoint (79999_iter.pth), as given
# by that repository's model.py / resnet.py (BiSeNet(n_classes=19): ContextPath with a
# ResNet-18 named `resnet`, arm16/arm32, conv_head32/16, conv_avg; ffm; three output heads).
PUBLISHED_KEYS = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.bn1.running_var": (64,),
    "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer2.0.downsample.1.running_mean": (128,),
    "cp.resnet.layer3.1.bn2.weight": (256,),
    "cp.resnet.layer4.0.conv1.weight": (512, 256, 3, 3),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm16.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.conv.conv.weight": (128, 512, 3, 3),
    "cp.arm32.bn_atten.bias": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_head16.bn.weight": (128,),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv_out.weight": (19, 64, 1, 1),
    "conv_out32.conv.conv.weight": (64, 128, 3, 3),
}


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(BiSeNet(n_classes=19).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def sample_crop() -> np.ndarray:
    bgr = cv2.imread(str(SAMPLE_CROP), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {SAMPLE_CROP}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _assert_label_map(labels: np.ndarray, shape: tuple[int, ...]) -> None:
    assert labels.dtype == np.uint8
    assert labels.shape == shape
    assert set(np.unique(labels).tolist()) <= {int(r) for r in Region}


def test_state_dict_matches_published_checkpoint_keys():
    state = BiSeNet(n_classes=19).state_dict()
    for key, shape in PUBLISHED_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # no spatial path in this variant; the ResNet classifier is not part of the checkpoint
    assert not any(k.startswith(("sp.", "cp.resnet.fc")) for k in state)
    weights = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert weights == 13_313_088  # x 4 bytes = 50.8 MiB, the published file's size


def test_eval_returns_main_logits_training_returns_aux():
    net = BiSeNet(n_classes=19)
    x = torch.randn(2, 3, 64, 96)
    net.train()
    main, aux16, aux32 = net(x)
    assert main.shape == aux16.shape == aux32.shape == (2, 19, 64, 96)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 19, 64, 96)


def test_random_checkpoint_parses_real_crop(random_checkpoint, sample_crop):
    parser = BiSeNetParser(random_checkpoint)
    assert parser.name == "bisenet" and parser.version.startswith("bisenet19-")
    labels = parser(sample_crop, np.zeros((68, 2), np.float32), "ibug68")
    _assert_label_map(labels, sample_crop.shape[:2])


def test_parse_batch_shapes_and_consistency(random_checkpoint, sample_crop):
    parser = BiSeNetParser(random_checkpoint, batch_size=2)
    crop = np.ascontiguousarray(sample_crop[20:220, 30:190])  # non-square, not 512
    batch = np.stack([crop, crop[:, ::-1], crop])
    labels = parser.parse_batch(batch)
    _assert_label_map(labels, (3, 200, 160))
    single = parser(crop, None, "ibug68")
    assert (labels[0] == single).mean() > 0.99
    assert (labels[2] == single).mean() > 0.99
    assert parser.parse_batch(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 8, 8)


def test_legacy_format_without_bn_counters_loads(tmp_path):
    state = {k: v for k, v in BiSeNet(n_classes=19).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state = {f"module.{k}": v for k, v in state.items()}  # saved from DataParallel
    path = tmp_path / "old.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert BiSeNetParser(path).model.n_classes == 19


def test_wrong_keys_raise_backend_error(tmp_path):
    state = BiSeNet(n_classes=19).state_dict()
    state["ffm.extra.weight"] = torch.zeros(3)
    del state["cp.arm16.conv_atten.weight"]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(FaceBackendError) as err:
        BiSeNetParser(path)
    message = str(err.value)
    assert "cp.arm16.conv_atten.weight" in message and "ffm.extra.weight" in message


def test_other_network_raises_backend_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).state_dict(), path)
    with pytest.raises(FaceBackendError, match="missing keys"):
        BiSeNetParser(path)


def test_wrong_class_count_raises_backend_error(tmp_path):
    path = tmp_path / "eleven.pth"
    torch.save(BiSeNet(n_classes=11).state_dict(), path)
    with pytest.raises(FaceBackendError, match="conv_out.conv_out.weight"):
        BiSeNetParser(path)


def test_unreadable_file_raises_backend_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FaceBackendError, match="garbage.pth"):
        BiSeNetParser(path)


def test_missing_file_raises_backend_error(tmp_path):
    path = tmp_path / "nowhere" / "79999_iter.pth"
    with pytest.raises(FaceBackendError) as err:
        BiSeNetParser(path)
    assert str(path) in str(err.value)
