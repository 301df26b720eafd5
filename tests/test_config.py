from pathlib import Path

import pytest

from heser.config import ConfigError, load_config, parse_override
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"


def test_default_profile_loads_and_resolves_paths():
    cfg = load_config(PARAMS)
    assert cfg.profile == "cpu"
    assert cfg.crop.size == 256
    assert cfg.path(cfg.paths.raw) == ROOT / "data" / "raw"


def test_paper_profile_overrides_crop_size():
    cfg = load_config(PARAMS, {"profile": "paper"})
    assert cfg.crop.size == 512
    assert cfg.crop.video.stride == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"crop.size": -1}, "crop.size"),
        ({"crop.backend": "dlib"}, "crop.backend"),
        ({"crop.nonsense": 1}, "crop.nonsense: no such parameter"),
        ({"nosection.x": 1}, "no such section"),
        ({"profile": "huge"}, "profile 'huge'"),
        ({"shard.split.val": 0.6, "shard.split.test": 0.5}, "leave some train"),
        ({"parse.backend": "bisenet"}, "bisenet_checkpoint"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, overrides)


def test_unknown_key_in_file_is_rejected(tmp_path: Path):
    bad = tmp_path / "params.yaml"
    bad.write_text(PARAMS.read_text().replace("shard:\n", "shard:\n  colour: blue\n"))
    with pytest.raises(ConfigError, match="shard.colour"):
        load_config(bad)


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("crop: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_parse_override_reads_yaml_values():
    assert parse_override("crop.size=512") == ("crop.size", 512)
    assert parse_override("parse.bisenet_checkpoint=null") == ("parse.bisenet_checkpoint", None)
    with pytest.raises(ConfigError):
        parse_override("crop.size")
