import subprocess
import sys
from pathlib import Path

import pytest

from heser.cli import main
from tests.conftest import ROOT, SAMPLE


def test_config_prints_validated_values(capsys):
    main(["--params", str(ROOT / "params.yaml"), "config", "--set", "crop.size=128"])
    out = capsys.readouterr().out
    assert "size: 128" in out and "backend: mediapipe" in out


def test_config_runs_from_any_directory_on_the_projects_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["config", "--set", "crop.size=96"])
    assert "size: 96" in capsys.readouterr().out


def test_bad_override_is_a_clear_error():
    with pytest.raises(SystemExit, match="crop.size"):
        main(["--params", str(ROOT / "params.yaml"), "config", "--set", "crop.size=huge"])


def test_fetch_from_mirror(tmp_path, monkeypatch):
    manifest = tmp_path / "m.csv"
    lines = (ROOT / "data/manifests/sample.csv").read_text().splitlines()
    manifest.write_text("\n".join([lines[0]] + [ln for ln in lines if "Tom_Hanks" in ln]) + "\n")
    monkeypatch.setenv("HESER_MIRROR", str(SAMPLE))
    main(["--params", str(ROOT / "params.yaml"), "fetch", str(manifest),
          "--dest", str(tmp_path / "out")])
    assert (tmp_path / "out/images/insightface_Tom_Hanks_54745.png").stat().st_size == 12123


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "heser"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "heser 0.1.0"
