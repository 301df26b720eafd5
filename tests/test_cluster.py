"""Ray connection settings built from params.yaml."""

from pathlib import Path

from heser.cluster import MB, ray_init_kwargs
from tests.conftest import PARAMS


def _ray(**changes):
    return PARAMS.ray.model_copy(update=changes)


def test_local_ray_is_sized_and_private():
    kwargs = ray_init_kwargs(_ray(address=None, num_cpus=2, object_store_mb=256))
    assert kwargs["num_cpus"] == 2 and kwargs["object_store_memory"] == 256 * MB
    assert kwargs["dashboard_host"] == "127.0.0.1" and "address" not in kwargs


def test_cluster_address_goes_to_ray_init_without_local_sizing():
    kwargs = ray_init_kwargs(_ray(address="auto"))
    assert kwargs["address"] == "auto"
    assert "num_cpus" not in kwargs and "object_store_memory" not in kwargs


def test_ship_package_sends_both_importable_packages():
    modules = [Path(p) for p in ray_init_kwargs(_ray(ship_package=True))["runtime_env"]
               ["py_modules"]]
    assert [m.name for m in modules] == ["heser", "pipelines"]
    assert all((m / "__init__.py").exists() for m in modules)
