import argparse
from pathlib import Path

import pytest

from heser.config import (
    DEFAULT_PARAMS,
    ConfigError,
    add_config_arguments,
    config_from_args,
    exit_on_error,
    load_config,
    parse_override,
    with_overrides,
)
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
        ({"aligner.motion_input": "landmarks", "aligner.loss.cross_motion": 1.0},
         "cross_motion compares E_pose/E_exp codes"),
        ({"aligner.motion_input": "mesh"}, "aligner.motion_input"),
        ({"aligner.augment.warp_target": True}, "warp_target warps I_T with its landmarks"),
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


def test_with_overrides_applies_and_validates_as_load_config_does():
    cfg = load_config(PARAMS)
    tuned = with_overrides(cfg, {"blender.tau": 0.05, "crop.size": 128}, "trial")
    assert (tuned.blender.tau, tuned.crop.size, tuned.root) == (0.05, 128, cfg.root)
    assert cfg.blender.tau != 0.05  # a new config, the old one as it was
    with pytest.raises(ConfigError, match="trial: blender.tauu: no such parameter"):
        with_overrides(cfg, {"blender.tauu": 1}, "trial")
    with pytest.raises(ConfigError, match="trial: invalid parameters\n  crop.size: Input should "
                                          "be greater than or equal to 32"):
        with_overrides(cfg, {"crop.size": 4}, "trial")


def test_the_command_line_reads_params_from_the_project_wherever_it_runs(tmp_path: Path,
                                                                          monkeypatch):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    args = parser.parse_args(["--set", "crop.size=128", "--set", "crop.backend=fan"])
    assert args.params == DEFAULT_PARAMS
    cfg = config_from_args(args)
    assert (cfg.crop.size, cfg.crop.backend, cfg.root) == (128, "fan", ROOT)


def test_errors_exit_with_one_line_naming_the_program(tmp_path: Path, capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--params", str(tmp_path / "missing.yaml")])
    missing = r"^stage: error: .*missing.yaml: file not found$"
    with pytest.raises(SystemExit, match=missing), exit_on_error("stage"):
        config_from_args(args)
    with pytest.raises(SystemExit, match="^stage: error: boom$"), exit_on_error(
            "stage", RuntimeError):
        raise RuntimeError("boom")
    # not one of ours: a traceback, as a bug should have
    with pytest.raises(KeyError), exit_on_error("stage"):
        raise KeyError("x")
