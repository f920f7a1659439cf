"""Files fetched on demand (data.download=true): tried mirror by mirror, checked against their
MD5, and renamed into place only once checked, so a file on disk is always a whole, verified one.

Standard library only (urllib, hashlib): torchvision cannot be installed beside this project's
torch. A download is written as every output is (`src.io.output_file`): to a hidden temporary
file, deleted on any failure but SIGKILL (whose leftover nothing ever reads).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from src.errors import DataError, first_line
from src.io import output_file

log = logging.getLogger(__package__)

MIRROR_SCHEMES = ("http", "https", "file")

# Seconds a connection may stay silent before that mirror counts as failed.
TIMEOUT_S = 60.0

_CHUNK = 1 << 20


class _MirrorFailed(Exception):
    """One mirror could not give a good copy; the next one is tried."""


def mirrors_problem(value: Any) -> str | None:
    """Why `value` is not a usable `data.mirrors` (None when it is: null or a list of URLs)."""
    if value is None:
        return None
    fix = "a list of base URLs, e.g. data.mirrors=[https://mirror.example/mnist/]"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return f"data.mirrors must be {fix}, got {value!r}"
    if len(value) == 0:
        return f"data.mirrors is empty: give {fix}, or null for the data set's own mirrors"
    for url in value:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in MIRROR_SCHEMES:
            return f"data.mirrors: {url!r} is not an http://, https:// or file:// URL"
        if parts.scheme != "file" and not parts.netloc:
            return f"data.mirrors: {url!r} names no host"
    return None


def size_text(size: int) -> str:
    """A byte count for a log line: 9.9 MB, 28.9 kB, 512 B."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _md5() -> Any:
    # A checksum against corruption, not a security check: allowed on FIPS systems too.
    return hashlib.md5(usedforsecurity=False)


def file_md5(path: Path) -> str:
    """The MD5 hex digest of a file on disk."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, _md5).hexdigest()


def _copy_checked(url: str, md5: str, out: IO[bytes]) -> int:
    """Stream `url` into `out`; the byte count, or _MirrorFailed saying what went wrong."""
    digest, size = _md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and size < int(announced):  # http.client ends a cut-off read quietly
            raise _MirrorFailed(f"the connection closed after {size} of {announced} bytes")
    except urllib.error.HTTPError as err:
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _MirrorFailed(first_line(err.reason) if err.reason else first_line(err)) from err
    except (OSError, http.client.HTTPException, ValueError) as err:  # timeouts, resets, cut-offs
        raise _MirrorFailed(first_line(err) or type(err).__name__) from err
    if digest.hexdigest() != md5:
        raise _MirrorFailed(
            f"MD5 mismatch: got {digest.hexdigest()}, expected {md5} ({size} bytes received: "
            "a corrupted or different file)"
        )
    return size


def mirror_url(base: str, name: str) -> str:
    """The URL of file `name` under a mirror's base URL."""
    return base + name if base.endswith("/") else f"{base}/{name}"


def fetch(name: str, md5: str, mirrors: Sequence[str], dest: Path) -> Path:
    """File `name` from the first mirror that gives a copy with this MD5, written atomically to
    `dest`; DataError naming the file and each mirror's failure when none does."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{dest.parent}: cannot be created ({first_line(err)})") from err
    failed: list[str] = []
    for base in mirrors:
        url = mirror_url(base, name)
        try:
            with output_file(dest) as tmp, open(tmp, "wb") as out:
                size = _copy_checked(url, md5, out)
        except _MirrorFailed as err:
            failed.append(f"{url}: {err}")
            continue
        except OSError as err:  # the destination, not the mirror: no point trying another
            reason = first_line(err.__cause__ or err)  # output_file's OutputWriteError: its cause
            raise DataError(f"{dest}: cannot be written ({reason})") from err
        after = f" (after {'; '.join(failed)})" if failed else ""
        log.info("Downloaded %s (%s, MD5 checked) to %s%s", url, size_text(size), dest, after)
        return dest
    own = any("MD5 mismatch" in f for f in failed)  # the checksums are the data set's: fixed
    hint = "; files of your own are read from data.root without data.download=true" if own else ""
    raise DataError(f"{dest}: could not be downloaded: {'; '.join(failed)}{hint}")


def gunzip(source: IO[bytes], dest: Path, what: str) -> None:
    """The plain file of a gzipped stream, written atomically (torchvision keeps both)."""
    try:
        with output_file(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(gzip.GzipFile(fileobj=source), out)
    except (OSError, EOFError, zlib.error) as err:  # OutputWriteError: say what caused it
        reason = first_line(err.__cause__ or err)
        raise DataError(f"{what}: cannot be unpacked to {dest} ({reason})") from err


def unpack_members(archive: Path, members: Sequence[str], folder: Path) -> None:
    """Each gzipped `member` of a zip archive, written unpacked to `folder` under its own name
    less `.gz` (torchvision's layout for EMNIST)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for member in members:
                if member not in names:
                    raise DataError(f"{archive}: holds no {member}")
                dest = folder / Path(member).name.removesuffix(".gz")
                with zf.open(member) as source:
                    gunzip(source, dest, f"{archive}:{member}")
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{archive}: cannot be read as a zip archive ({first_line(err)})") from err


def fetch_archive(
    name: str, md5: str, mirrors: Sequence[str], folder: Path, members: Sequence[str]
) -> None:
    """The gzipped `members` of zip archive `name`, fetched and checked like `fetch`, unpacked
    into `folder`; the archive is deleted once they all are (only these members are read)."""
    archive = folder / name
    # An archive already there was renamed into place only once checked, but an unpacking cut
    # short (Ctrl-C) keeps it: check it again rather than fetch hundreds of megabytes anew.
    if not (archive.is_file() and file_md5(archive) == md5):
        fetch(name, md5, mirrors, archive)
    unpack_members(archive, members, folder)
    archive.unlink(missing_ok=True)
