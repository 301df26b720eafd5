"""The `download` stage: fetch the data and weights manifests into data/raw and data/weights.

Only asset code: the stage reruns when the manifests or the fetching code change, not when the
crop or parse code does.
"""

from __future__ import annotations

from heser import assets
from heser.config import Config
from heser.io import fresh_dir
from heser.preprocess.errors import StageError
from heser.preprocess.items import INVENTORY, write_inventory
from heser.rejects import REJECTS_FILE, write_rejects


def run_download(cfg: Config) -> dict[str, int]:
    """Fetch the data and weights manifests (mirror first, then network), verify sha256."""
    raw_dir = fresh_dir(cfg.path(cfg.paths.raw))
    weights_dir = fresh_dir(cfg.path(cfg.paths.weights))
    mirrors = assets.mirror_dirs(cfg.assets.mirrors, cfg.root)
    records, rejects, failures = [], [], []
    for manifest, dest in ((cfg.assets.data_manifest, raw_dir),
                           (cfg.assets.weights_manifest, weights_dir)):
        rows, bad_rows = assets.read_manifest(cfg.path(manifest))
        fetched, failed = assets.fetch_all(rows, dest, mirrors, retries=cfg.assets.retries,
                                           timeout_s=cfg.assets.timeout_s)
        records += [r for r in fetched if dest == raw_dir]
        rejects += bad_rows + failed
        failures += failed
    write_inventory(raw_dir / INVENTORY, records)
    write_rejects(raw_dir / REJECTS_FILE, rejects)
    # A corrupt manifest row is recorded and skipped; a file that fails to download or to
    # verify is an error (after the rest are fetched) unless the user opts out.
    if failures and cfg.assets.fail_on_error:
        listing = "\n".join(f"  {r.file}: {r.reason}" for r in failures[:20])
        raise StageError(f"download: {len(failures)} manifest rows failed "
                         f"(set assets.fail_on_error: false to record them and go on):\n{listing}")
    return {"files": len(records), "rejects": len(rejects)}
