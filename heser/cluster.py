"""How heser connects to Ray: a local instance sized for small machines, or an existing cluster.

Workers must import heser and its dependencies. On a local Ray they run this interpreter, so the
editable install is enough. On a cluster every node needs the same pinned install
(``pip install -c requirements.lock -e .``, or the same container image): the dependencies are
native wheels of several GB (torch, opencv, LiteRT), too heavy for a per-job runtime_env pip
install. ``ray.ship_package`` adds this checkout's heser/ and pipelines/ as runtime_env
py_modules on top, so edits to the code reach the workers without reinstalling anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import heser
from heser.config import RayCluster

MB = 2**20


def ray_init_kwargs(ray: RayCluster) -> dict[str, Any]:
    """Keyword arguments for ``ray.init`` (and prefect-ray's RayTaskRunner ``init_kwargs``)."""
    kwargs: dict[str, Any] = {"namespace": "heser"}
    if ray.address:
        # Passed to ray.init itself: prefect-ray would start a local instance for "auto".
        kwargs["address"] = ray.address
    else:
        kwargs.update(num_cpus=ray.num_cpus, object_store_memory=ray.object_store_mb * MB,
                      include_dashboard=ray.dashboard, dashboard_host="127.0.0.1")
    if ray.ship_package:
        package = Path(heser.__file__).parent
        kwargs["runtime_env"] = {"py_modules": [str(package), str(package.parent / "pipelines")]}
    return kwargs
