"""Keep every tool's state inside the project (or the system temp dir).

DVC, MLflow, Ray and Prefect each default to a directory in $HOME or /var/tmp. The `heser`
command, the stages and the tests call ``configure_tool_state()`` first; the Makefile exports
the same variables for the `dvc` command itself, and .dvc/config sets DVC's site cache dir.
Values already set in the environment win, so a user can point them elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from heser.config import ROOT

STATE_DIR = ROOT / ".state"


def tool_state_env(root: Path = ROOT) -> dict[str, str]:
    state = root / ".state"
    return {
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(state / "dvc-site"),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "RAY_TMPDIR": _ray_tmpdir(state),
        # numba (pulled in by face-alignment) caches compiled code next to the package otherwise
        "NUMBA_CACHE_DIR": str(state / "numba"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
    }


def _ray_tmpdir(state: Path) -> str:
    """Ray's session dir holds unix sockets, whose paths may not exceed 107 bytes; Ray appends
    about 70 to this directory, so a deep checkout falls back to the system temp dir."""
    own = state / "ray"
    if len(str(own)) <= 36:
        return str(own)
    return str(Path(tempfile.gettempdir()) / f"heser-ray-{os.getuid()}")


def configure_tool_state(root: Path = ROOT) -> dict[str, str]:
    """Set the variables above where the user has not; return what is in force."""
    for key, value in tool_state_env(root).items():
        os.environ.setdefault(key, value)
    (root / ".state").mkdir(exist_ok=True)
    return {key: os.environ[key] for key in tool_state_env(root)}
