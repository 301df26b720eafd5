"""Tool state stays inside the project."""

import configparser
import tempfile
from pathlib import Path

from heser.env import configure_tool_state, tool_state_env
from tests.conftest import ROOT


def test_state_dirs_are_inside_the_project(monkeypatch):
    for key in tool_state_env():
        monkeypatch.delenv(key, raising=False)
    env = configure_tool_state()
    for key in ("PREFECT_HOME", "DVC_SITE_CACHE_DIR", "NUMBA_CACHE_DIR"):
        assert env[key].startswith(str(ROOT / ".state"))
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{ROOT / '.state' / 'mlflow.db'}"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


def test_ray_sockets_fit_the_unix_path_limit():
    # Ray appends /ray/session_<date>_<time>_<pid>/sockets/plasma_store (about 66 bytes);
    # a unix socket path may have at most 107.
    assert tool_state_env(Path("/p"))["RAY_TMPDIR"] == "/p/.state/ray"
    deep = tool_state_env(Path("/home/someone/projects/research/head-swapping/heser"))
    assert deep["RAY_TMPDIR"].startswith(tempfile.gettempdir())
    for root in (ROOT, Path("/" + "x" * 200)):
        assert len(tool_state_env(root)["RAY_TMPDIR"]) + 70 <= 107


def test_user_settings_win(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert configure_tool_state()["PREFECT_HOME"] == str(tmp_path)


def test_dvc_config_keeps_its_site_cache_in_the_project():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    core = {k.strip(): v.strip() for k, v in config["core"].items()}
    assert core["analytics"] == "false"
    assert (ROOT / ".dvc" / core["site_cache_dir"]).resolve() == (ROOT / ".state" / "dvc-site")
