"""Tool state stays inside the project."""

import configparser

from heser.env import configure_tool_state, tool_state_env
from tests.conftest import ROOT


def test_state_dirs_are_inside_the_project(monkeypatch):
    for key in tool_state_env():
        monkeypatch.delenv(key, raising=False)
    env = configure_tool_state()
    for key in ("PREFECT_HOME", "RAY_TMPDIR", "DVC_SITE_CACHE_DIR", "NUMBA_CACHE_DIR"):
        assert env[key].startswith(str(ROOT / ".state"))
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{ROOT / '.state' / 'mlflow.db'}"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


def test_user_settings_win(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert configure_tool_state()["PREFECT_HOME"] == str(tmp_path)


def test_dvc_config_keeps_its_site_cache_in_the_project():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    core = {k.strip(): v.strip() for k, v in config["core"].items()}
    assert core["analytics"] == "false"
    assert (ROOT / ".dvc" / core["site_cache_dir"]).resolve() == (ROOT / ".state" / "dvc-site")
