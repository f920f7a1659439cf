"""data=mnist data.download=true: the MNIST family fetched from a mirror, checked, never half
written.

No test leaves this machine: each starts an HTTP server on 127.0.0.1 (port 0, in a thread) that
serves small IDX files written here, and gives their MD5s to the data set's table through the
documented hook (`DATASETS[name]` replaced; users can only change the mirrors).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import logging
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from src.data.sources import download, mnist
from src.data.sources.idx import DATASETS
from tests.conftest import assert_last_line_error, cli_in_process, free_port
from tests.test_sources import RUN, as_uint8, assert_same, digits, fail, idx_bytes

# Small files of each data set, as its mirrors serve them: the train and test images.
SETS = digits(0), digits(1, per_class=2)


# ---------------------------------------------------------------------------------------------
# A local mirror


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """An HTTP server on 127.0.0.1: the files of its `folder` at its `url`, the paths asked of it
    in `requests`; `serve(name)` puts a data set's files there."""
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)  # a stuck test fails in seconds, not minutes
    folder = tmp_path / "mirror"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/cut/"):  # announces more than it sends, then closes
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                return
            super().do_GET()

        def log_message(self, *args) -> None:  # not on the test's stderr
            pass

    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield SimpleNamespace(
        folder=folder, requests=requests, url=url, serve=lambda n: serve(n, folder, monkeypatch)
    )
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def packed_files(name: str) -> dict[str, bytes]:
    """Each data file of `name`, gzipped, by its name without .gz (what a copy by hand holds)."""
    spec, files = DATASETS[name], {}
    for split, data in zip(("train", "test"), SETS):
        images_name, labels_name = spec.files[split]
        files[images_name] = idx_bytes(as_uint8(data.images[:, 0]), 2051)
        if name == "qmnist":  # 8 int32 columns an image, the class first
            table = np.arange(len(data) * 8, dtype=np.int64).reshape(-1, 8) + 100
            table[:, 0] = data.labels
            files[labels_name] = idx_bytes(table, 3074, ">i4")
        else:
            files[labels_name] = idx_bytes(data.labels.astype(np.uint8), 2049)
    return {stem: gzip.compress(payload, mtime=0) for stem, payload in files.items()}


def serve(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Write `name`'s resources into `folder` and give the table their MD5s; the files served."""
    spec, packed = DATASETS[name], packed_files(name)
    served = {}
    for resource in spec.resources:
        if resource.members:  # EMNIST: one zip of every split; a letters member is never read
            buf = folder / resource.name
            with zipfile.ZipFile(buf, "w") as zf:
                for member in resource.members:
                    zf.writestr(member, packed[Path(member).name.removesuffix(".gz")])
                zf.writestr("gzip/emnist-letters-train-images-idx3-ubyte.gz", b"not read")
            served[resource.name] = buf.read_bytes()
        else:
            served[resource.name] = packed[resource.name.removesuffix(".gz")]
            (folder / resource.name).write_bytes(served[resource.name])
    resources = tuple(
        dataclasses.replace(r, md5=hashlib.md5(served[r.name]).hexdigest()) for r in spec.resources
    )
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(spec, resources=resources))
    return served


def files_under(folder: Path) -> list[str]:
    """Every file under `folder` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Downloads


@pytest.mark.parametrize("name", list(DATASETS))
def test_download_fetches_each_file_once_into_torchvisions_layout(
    tmp_path: Path, mirror: SimpleNamespace, name: str, caplog
) -> None:
    served = mirror.serve(name)
    root = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="src.data.sources"):
        got = mnist(None, str(root), dataset=name, download=True, mirrors=[mirror.url])
    assert_same(got, SETS)
    assert sorted(mirror.requests) == sorted(f"/{n}" for n in served)
    fetched = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Downloaded")]
    assert len(fetched) == len(served)
    assert all(mirror.url in line and "MD5 checked" in line for line in fetched)
    # torchvision's raw/ folder: the plain files (and the .gz as fetched; no zip kept).
    raw = f"{DATASETS[name].folder}/raw/"
    stems = [s for split in ("train", "test") for s in DATASETS[name].files[split]]
    kept = [] if name == "emnist_digits" else [f"{n}" for n in served]
    assert files_under(root) == sorted(raw + f for f in [*stems, *kept])

    mnist(None, str(root), dataset=name, download=True, mirrors=[mirror.url])
    assert len(mirror.requests) == len(served), "a second run fetched again"
    # and they read as the same files copied by hand
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    for stem, payload in packed_files(name).items():
        (by_hand / f"{stem}.gz").write_bytes(payload)
    assert_same(mnist(None, str(by_hand), dataset=name), got)


def test_failing_mirrors_are_each_named_and_a_good_one_after_them_serves(
    tmp_path: Path, mirror: SimpleNamespace, caplog
) -> None:
    mirror.serve("kmnist")
    refused = f"http://127.0.0.1:{free_port()}/"  # connection refused
    # a base URL without its slash works too; a cut-off transfer was an MD5 mismatch
    mirrors = [f"{mirror.url}nothing-here", refused, f"{mirror.url}cut/"]
    root = tmp_path / "data"
    fail(
        lambda: mnist(None, str(root), dataset="kmnist", download=True, mirrors=mirrors),
        "train-images-idx3-ubyte.gz: could not be downloaded",
        f"{mirror.url}nothing-here/train-images-idx3-ubyte.gz: HTTP 404",
        f"{refused}train-images-idx3-ubyte.gz: ",
        "refused",
        "cut/train-images-idx3-ubyte.gz: the connection closed after 10 of 100000 bytes",
    )
    assert files_under(root) == []
    # the same mirrors, then a good one: the download falls through to it
    mirror.requests.clear()
    with caplog.at_level(logging.INFO, logger="src.data.sources"):
        got = mnist(
            None, str(root), dataset="kmnist", download=True, mirrors=[*mirrors, mirror.url]
        )
    assert_same(got, SETS)
    assert "/nothing-here/train-images-idx3-ubyte.gz" in mirror.requests
    assert any("HTTP 404" in r.getMessage() for r in caplog.records)


def test_without_download_nothing_is_fetched_and_an_interrupted_one_leaves_no_file(
    tmp_path: Path, mirror: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror.serve("mnist")
    root = tmp_path / "data"
    root.mkdir()
    fail(
        lambda: mnist(None, str(root), mirrors=[mirror.url]),
        "no MNIST file train-images-idx3-ubyte",
        "add data.download=true to fetch it",
    )
    fail(
        lambda: mnist(None, str(tmp_path / "nowhere"), dataset="qmnist", mirrors=[mirror.url]),
        "no such folder",
        "add data.download=true",
    )
    assert mirror.requests == []

    def interrupted(url: str, md5: str, out) -> int:
        out.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_copy_checked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist(None, str(root), download=True, mirrors=[mirror.url])
    assert files_under(root) == []


def test_file_mirrors_serve_a_cluster_folder(tmp_path: Path, mirror: SimpleNamespace) -> None:
    mirror.serve("fashion_mnist")
    got = mnist(None, str(tmp_path / "d"), "fashion_mnist", True, [mirror.folder.as_uri() + "/"])
    assert_same(got, SETS)
    assert (tmp_path / "d" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


@pytest.mark.parametrize("name", ["qmnist", "emnist_digits"])
def test_what_an_earlier_fetch_left_is_read_without_fetching(
    tmp_path: Path, mirror: SimpleNamespace, name: str
) -> None:
    served = mirror.serve(name)
    raw = tmp_path / "data" / DATASETS[name].folder / "raw"
    raw.mkdir(parents=True)
    if name == "qmnist":  # what torchvision leaves in ROOT/<Name>/raw: the unpacked files
        for stem, payload in packed_files(name).items():
            (raw / stem).write_bytes(gzip.decompress(payload))
    else:  # a checked archive left by an interrupted unpacking: used, then removed
        (raw / "gzip.zip").write_bytes(served["gzip.zip"])
    got = mnist(None, str(tmp_path / "data"), name, download=True, mirrors=[mirror.url])
    assert_same(got, SETS)
    assert mirror.requests == [] and not (raw / "gzip.zip").exists()


def test_the_table_holds_torchvisions_names_checksums_and_mirrors() -> None:
    """Copied from torchvision.datasets.mnist: a file fetched here is the one torchvision gets."""
    table = {n: {r.name: r.md5 for r in spec.resources} for n, spec in DATASETS.items()}
    assert table["mnist"] == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert table["fashion_mnist"]["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert table["kmnist"]["train-images-idx3-ubyte.gz"] == "bdb82020997e1d708af4cf47b453dcf7"
    assert table["emnist_digits"] == {"gzip.zip": "58c8d27c78d21e728a6bc7b3cc06412e"}
    assert table["qmnist"]["qmnist-test-labels-idx2-int.gz"] == "5b5b05890a5e13444e108efe57b788aa"
    assert DATASETS["mnist"].mirrors == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    assert [spec.folder for spec in DATASETS.values()] == [
        "MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST"
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The config's checks and the command line


def test_cli_corrupted_download_is_one_line_exit_2_and_leaves_no_file(
    tmp_path: Path, mirror: SimpleNamespace
) -> None:
    mirror.serve("mnist")
    labels = mirror.folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-3] + b"bad")
    root = tmp_path / "data"
    args = ["data=mnist", f"data.root={root}", "data.download=true", f"data.mirrors=[{mirror.url}]"]
    proc = cli_in_process(
        *RUN, *args, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_last_line_error(
        proc,
        f"{root / 'MNIST' / 'raw' / 'train-labels-idx1-ubyte.gz'}: could not be downloaded",
        f"{mirror.url}train-labels-idx1-ubyte.gz: MD5 mismatch",
        DATASETS["mnist"].resources[1].md5,
        "expected",
        "; files of your own are read from data.root without data.download=true",
        code=2,
    )
    # The images came first and were good; of the labels, nothing: no partial, no temporary.
    assert files_under(root) == [
        "MNIST/raw/train-images-idx3-ubyte",
        "MNIST/raw/train-images-idx3-ubyte.gz",
    ]
