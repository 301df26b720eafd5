"""How heser connects to Ray: a local instance sized for small machines, or an existing cluster.

Workers must import heser and its dependencies. On a local Ray they run this interpreter, so the
editable install is enough. On a cluster every node needs the same pinned install
(``pip install -c requirements.lock -e .``, or the same container image): the dependencies are
native wheels of several GB (torch, opencv, LiteRT), too heavy for a per-job runtime_env pip
install. ``ray.ship_package`` adds this checkout's heser/ and pipelines/ as runtime_env
py_modules on top, so edits to the code reach the workers without reinstalling anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import heser
from heser.config import RayCluster

MB = 2**20
# The head declares a node dead after `threshold` failed health checks, one per `period`: 2 s
# here (Ray's defaults allow a real network many seconds).
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                      "RAY_health_check_failure_threshold": "4"}


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


class LocalCluster:
    """A Ray cluster of separate raylets on this machine: a head on this host's address and nodes
    on 127.0.0.2, 127.0.0.3, ... (so a driver here always attaches to the head's raylet).

    Every fixed port is a free one picked here, and the cluster has its own temp dir, so it runs
    beside other Ray instances; ``stop`` ends only its own processes (never ``ray stop``, which
    ends every Ray on the machine). Each node is a ``ray start --block`` process: when any of
    its processes dies, it ends the others.
    """

    def __init__(self, size: int = 2, num_cpus: int = 1, object_store_mb: int = 100):
        self.size, self.num_cpus, self.object_store_mb = size, num_cpus, object_store_mb
        # Short: Ray's socket paths under it may not exceed 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="hray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self._log_files: list[Any] = []

    def start(self, timeout_s: float = 240) -> LocalCluster:
        """The head, then ``size - 1`` more nodes; returns when all of them are alive."""
        try:
            self._launch(["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                          "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                          f"--dashboard-port={_free_port()}",
                          f"--ray-client-server-port={_free_port()}"], timeout_s)
            for _ in range(self.size - 1):
                self.add_node(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, timeout_s: float = 240) -> subprocess.Popen:
        ip = f"127.0.0.{len(self.nodes) + 1}"
        return self._launch([f"--address={self.address}", f"--node-ip-address={ip}"], timeout_s)

    def _launch(self, args: list[str], timeout_s: float) -> subprocess.Popen:
        index = len(self.nodes)
        log = open(self.temp_dir / f"node{index}.log", "w")  # noqa: SIM115 - closed in stop()
        self._log_files.append(log)
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                   f"--num-cpus={self.num_cpus}",
                   f"--object-store-memory={self.object_store_mb * MB}",
                   f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats",
                   *args]
        # Auth mode said outright: with a token in ~/.ray (another Ray made one) the head would
        # otherwise require it and the nodes would not send it.
        env = {**os.environ, **FAST_HEALTH_CHECKS, "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": "disabled"}
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        self.nodes.append(node)
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in self._log(index) or self.raylet(index) is None:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {index} did not start:\n{self._log(index)[-3000:]}")
            time.sleep(0.5)
        return node

    def raylet(self, index: int) -> psutil.Process | None:
        """Node ``index``'s raylet process (kill it to lose the node)."""
        try:
            children = psutil.Process(self.nodes[index].pid).children()
        except psutil.NoSuchProcess:
            return None
        return next((c for c in children if c.name() == "raylet"), None)

    def node_id(self, index: int) -> str:
        """Node ``index``'s Ray node id (hex), from its raylet's command line."""
        raylet = self.raylet(index)
        if raylet is None:
            raise RuntimeError(f"ray node {index} has no raylet")
        flag = next(a for a in raylet.cmdline() if a.startswith("--node_id="))
        return flag.split("=", 1)[1]

    def _log(self, index: int) -> str:
        """What node ``index``'s ``ray start`` printed (it says when the node is up)."""
        return (self.temp_dir / f"node{index}.log").read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the node trees, and workers orphaned by a dead
        raylet (found by this cluster's temp dir on their command line)."""
        found: dict[int, psutil.Process] = {}
        for node in self.nodes:
            try:
                parent = psutil.Process(node.pid)
                found.update({p.pid: p for p in [parent, *parent.children(recursive=True)]})
            except psutil.NoSuchProcess:
                pass
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                found.setdefault(proc.pid, proc)
        return list(found.values())

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM each node's ``ray start`` (it ends its processes), then SIGKILL what is
        left of this cluster's processes."""
        survivors = self.processes()
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(survivors, timeout=grace_s)
        for proc in alive + [p for p in self.processes() if p not in alive]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=10)
        for log in self._log_files:
            log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # session dirs, logs, spilled objects

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
