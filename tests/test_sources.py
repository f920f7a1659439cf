"""Digit data from disk: DigitDataset folders, MATLAB .mat files and MNIST IDX files.

Small fixtures of each format are written to a temporary folder from the built-in generator's
digits, read back, broken in every way the README lists, and trained on through the CLI.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from src.data.arrays import DigitArrays
from src.data.datamodule import DigitsDataModule
from src.data.sources import folder, mat, mnist, split_class
from src.data.synthetic import generate_digits
from src.errors import DataError
from tests.conftest import assert_one_line_error, cli_in_process, raised_line

# ---------------------------------------------------------------------------------------------
# Fixture writers


@functools.cache
def digits(stream: int = 0, per_class: int = 4) -> DigitArrays:
    """Real digit images (4 a class: 40), quantised to 8 bits so that PNG and IDX round-trip."""
    d = generate_digits(per_class, [0, stream])
    return DigitArrays(np.round(d.images * 255) / np.float32(255), d.labels, d.angles)


def as_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(images * 255).astype(np.uint8)


def write_tree(folder: Path, data: DigitArrays) -> None:
    """One PNG per image in FOLDER/<label>/NNN.png, NNN its index in `data`."""
    for i, (img, label) in enumerate(zip(as_uint8(data.images[:, 0]), data.labels)):
        path = folder / str(label) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)


def write_two_trees(root: Path) -> tuple[DigitArrays, DigitArrays]:
    train, test = digits(0), digits(1, per_class=2)
    write_tree(root / "train", train)
    write_tree(root / "test", test)
    return train, test


def in_folder_order(data: DigitArrays) -> DigitArrays:
    """The order the folder source returns: by class, then by file name (the index here)."""
    order = np.argsort(data.labels, kind="stable")
    return DigitArrays(data.images[order], data.labels[order])


def write_mat(
    path: Path, data: DigitArrays, part: str = "Train", labels: str = "numeric", **extra
) -> None:
    """A .mat as MATLAB saves XTrain (28x28x1xN uint8) and YTrain (numbers, cellstr or char)."""
    x = as_uint8(data.images).transpose(2, 3, 1, 0)  # (N, C, H, W) -> MATLAB's (H, W, C, N)
    if labels == "numeric":
        y = data.labels.astype(np.float64).reshape(-1, 1)
    elif labels == "cellstr":
        y = np.empty((len(data), 1), dtype=object)
        y[:, 0] = [str(v) for v in data.labels]
    else:  # an N x 1 char array, as `char(string(YTrain))` gives
        y = np.array([str(v) for v in data.labels])
    scipy.io.savemat(path, {f"X{part}": x, f"Y{part}": y, **extra})


def idx_bytes(array: np.ndarray, magic: int, dtype: str = ">u1") -> bytes:
    """An IDX file's bytes: the magic number, the shape, then the big-endian values."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    payload = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)


def write_mnist(root: Path, gz: bool = True, dotted: bool = False) -> tuple[DigitArrays, ...]:
    root.mkdir(parents=True, exist_ok=True)
    sets = digits(0), digits(1, per_class=2)
    for prefix, data in zip(("train", "t10k"), sets):
        for kind, magic, array in (
            ("images-idx3-ubyte", 2051, as_uint8(data.images[:, 0])),
            ("labels-idx1-ubyte", 2049, data.labels.astype(np.uint8)),
        ):
            name = f"{prefix}-{kind}".replace("-idx", ".idx" if dotted else "-idx")
            write_idx(root / (name + (".gz" if gz else "")), array, magic)
    return sets


def _element(dtype: int, payload: bytes) -> bytes:
    return struct.pack("<II", dtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def matlab_object(name: str, cls: str) -> bytes:
    """A top-level MATLAB object (MCOS opaque class) as `save` writes one, e.g. a categorical.

    Only MATLAB can write the object's contents; scipy never reads past this wrapper (three
    names and a uint32 array), which is all it would see of a real categorical too.
    """
    mi_int8, mi_int32, mi_uint32, mi_matrix, mx_opaque, mx_uint32 = 1, 5, 6, 14, 17, 13
    meta = np.array([0xDD000000, 2, 1, 1, 1, 1], dtype="<u4").tobytes()
    refs = _element(
        mi_matrix,
        _element(mi_uint32, struct.pack("<II", mx_uint32, 0))
        + _element(mi_int32, struct.pack("<ii", 6, 1))
        + _element(mi_int8, b"")
        + _element(mi_uint32, meta),
    )
    body = _element(mi_uint32, struct.pack("<II", mx_opaque, 0))
    for text in (name, "MCOS", cls):
        body += _element(mi_int8, text.encode())
    return _element(mi_matrix, body + refs)


def v73_file(path: Path) -> None:
    """The 128-byte header of a MATLAB v7.3 file (HDF5 follows in a real one)."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    path.write_bytes(text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384)


fail = functools.partial(raised_line, DataError)  # its one-line DataError, naming needles


def assert_same(got: tuple[DigitArrays, ...], want: tuple[DigitArrays, ...]) -> None:
    """The sets read (train, test) hold the sets written, to the 8 bits of a PNG or IDX file."""
    for g, w in zip(got, want, strict=True):
        assert g.images.dtype == np.float32 and g.labels.dtype == np.int64
        assert g.images.shape == w.images.shape
        np.testing.assert_array_equal(g.labels, w.labels)
        np.testing.assert_allclose(g.images, w.images, atol=0.5 / 255)


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under the folders, with its bytes."""
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# data=folder


def test_single_tree_is_halved_per_class_by_the_seeded_rule(tmp_path: Path) -> None:
    data = digits(0)
    write_tree(tmp_path / "DigitDataset", data)
    train, test = folder(None, str(tmp_path / "DigitDataset"), split_seed=7)
    assert len(train) == len(test) == 20
    assert (np.bincount(train.labels) == 2).all() and (np.bincount(test.labels) == 2).all()
    # the rule as the README states it, recomputed here
    want_train = []
    for c in range(10):
        names = sorted(f"{i:03d}.png" for i in np.flatnonzero(data.labels == c))
        ranked = sorted(names, key=lambda n: hashlib.sha256(f"7/{c}/{n}".encode()).hexdigest())
        want_train += sorted(ranked[:2])
    want = [int(n[:3]) for n in want_train]
    np.testing.assert_allclose(train.images, data.images[want], atol=0.5 / 255)
    held_out = sorted(set(range(40)) - set(want), key=lambda i: (data.labels[i], i))
    np.testing.assert_allclose(test.images, data.images[held_out], atol=0.5 / 255)
    # deterministic, and the seed matters
    again, _ = folder(None, str(tmp_path / "DigitDataset"), split_seed=7)
    np.testing.assert_array_equal(again.images, train.images)
    other, _ = folder(None, str(tmp_path / "DigitDataset"), split_seed=8)
    assert not np.array_equal(other.images, train.images)
    # split_class itself: half to each side, the odd one to training
    names = [f"image{i}.png" for i in range(1000)]
    tr, te = split_class(names, 3, 0)
    assert len(tr) == len(te) == 500 and not set(tr) & set(te)
    assert split_class(names, 3, 0) == (tr, te)
    assert split_class(names, 4, 0) != (tr, te)  # each class draws its own half
    tr5, te5 = split_class(names[:5], 3, 0)
    assert (len(tr5), len(te5)) == (3, 2)


def test_folder_converts_16_bit_palette_colour_and_size_on_request(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    write_two_trees(root)
    ramp = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(root / "train/1/a16.png")
    Image.fromarray(as_uint8(ramp)).convert("P").save(root / "train/2/palette.png")
    rgb = np.stack([as_uint8(ramp)] * 3, axis=-1)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(root / "test/4/rgb.png")
    Image.fromarray(as_uint8(ramp)).resize((56, 56)).save(root / "test/6/big.png")

    fail(lambda: folder(None, str(root)), "rgb.png", "colour", "data.grayscale=true")
    (root / "test/4/rgb.png").rename(tmp_path / "rgb.png")
    fail(lambda: folder(None, str(root)), "big.png", "56x56", "data.resize=true")
    (tmp_path / "rgb.png").rename(root / "test/4/rgb.png")

    train, test = folder(None, str(root), resize=True, grayscale=True)
    one = train.images[train.labels == 1][-1, 0]  # a16.png sorts after the NNN.png files
    np.testing.assert_allclose(one, ramp, atol=1 / 65535)
    two = train.images[train.labels == 2][-1, 0]
    np.testing.assert_allclose(two, ramp, atol=1 / 255)
    four = test.images[test.labels == 4][-1, 0]  # rgb2gray's weights
    assert four[0, 0] == pytest.approx(round(0.299 * 255) / 255, abs=1 / 255)
    np.testing.assert_allclose(four[1:], ramp[1:], atol=1 / 255)
    six = test.images[test.labels == 6][-1, 0]  # big.png, resized back to 28x28
    np.testing.assert_allclose(six, ramp, atol=0.03)


def test_folder_reads_caches_and_serves_train_and_test_trees_following_edits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root, cache = tmp_path / "digits", tmp_path / "cache"
    written = write_two_trees(root)
    (root / "train" / "3" / ".DS_Store").write_bytes(b"\0junk")
    (root / "test" / "5" / "Thumbs.db").write_bytes(b"junk")
    write_tree(root / "val", digits(2, per_class=1))  # an ImageFolder layout's: not read, said so
    with caplog.at_level("WARNING"):
        first = folder(cache, str(root))
    assert_same(first, [in_folder_order(data) for data in written])
    assert f"Ignored val beside train/ and test/ in {root}: data=folder reads" in caplog.text
    files = sorted(cache.glob("folder-*.npz"))
    assert len(files) == 2
    again = folder(cache, str(root))
    assert sorted(cache.glob("folder-*.npz")) == files
    np.testing.assert_array_equal(again[0].images, first[0].images)
    # rewrite one image: the cache key follows (size, mtime), so the new pixels are read
    target = sorted((root / "train" / "0").glob("*.png"))[0]
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    edited, _ = folder(cache, str(root))
    assert edited.images[0].min() == 1.0
    assert len(list(cache.glob("folder-*.npz"))) == 3  # the test set's entry still holds
    # and the data module serves them
    dm = DigitsDataModule(
        source="folder",
        batch_size=8,
        cache_dir=tmp_path / "dm-cache",
        root=str(root),
        resize=False,
        split_seed=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
    assert len(dm.test_set) == 20 and dm.mean_image.shape == (1, 28, 28)


# ---------------------------------------------------------------------------------------------
# data=mat


@pytest.mark.parametrize("labels", ["numeric", "cellstr", "char"])
def test_mat_round_trip(tmp_path: Path, labels: str) -> None:
    train, test = digits(0), digits(1, per_class=2)
    write_mat(tmp_path / "train.mat", train, "Train", labels, anglesTrain=train.angles[:, None])
    write_mat(tmp_path / "test.mat", test, "Test", labels)
    got = mat(None, str(tmp_path / "train.mat"), str(tmp_path / "test.mat"))
    assert_same(got, (train, test))
    np.testing.assert_array_equal(got[0].angles, train.angles)
    assert got[1].angles is None


def test_mat_accepts_double_images_28x28xN_char_rows_and_one_file(tmp_path: Path) -> None:
    train, test = digits(0), digits(1, per_class=2)
    both = tmp_path / "digits.mat"
    scipy.io.savemat(
        both,
        {
            "XTrain": train.images[:, 0].transpose(1, 2, 0).astype(np.float64),  # 28x28xN double
            "YTrain": "".join(map(str, train.labels)),  # one 1xN char row
            "XTest": as_uint8(test.images).transpose(2, 3, 1, 0),
            "YTest": test.labels.astype(np.uint8)[None, :],  # a 1xN uint8 row
        },
    )
    assert_same(mat(None, str(both), str(both)), (train, test))


# ---------------------------------------------------------------------------------------------
# data=mnist


@pytest.mark.parametrize(
    ("gz", "dotted", "under"),
    [(True, False, ""), (False, False, ""), (True, True, ""), (True, False, "MNIST/raw")],
    ids=["gz", "plain", "dotted", "torchvision-layout"],
)
def test_mnist_round_trip(tmp_path: Path, gz: bool, dotted: bool, under: str) -> None:
    written = write_mnist(tmp_path / "mnist" / under, gz=gz, dotted=dotted)
    assert_same(mnist(None, str(tmp_path / "mnist")), written)


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file or folder and the problem


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()
    (folder / ".DS_Store").write_bytes(b"")  # junk does not count


def _no_test_tree(root: Path) -> None:
    (root / "train").rename(root / "train_only")
    (root / "test").rename(root / "train")


def _image(pixels: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(pixels).save(path)


_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def _cut_plain(path: Path) -> None:
    (path.parent / _TRAIN_IMAGES).unlink()
    write_idx(path, as_uint8(digits(0).images[:, 0]), 2051)
    _truncate(path, 2000)


def _idx(array: np.ndarray, magic: int = 2049) -> Callable[[Path], None]:
    return lambda path: write_idx(path, array, magic)


# Each case: `change` breaks ROOT/where of the source's files; the path it returns, if any, is
# the one to name instead.
@pytest.mark.parametrize(
    ("source", "where", "change", "needles"),
    [
        ("folder", "train/4", _empty, ["holds no image files"]),
        ("folder", "test/cat", lambda p: write_tree(p, digits(0)),
         ["'cat'", "not a digit label 0-9"]),
        ("folder", "test/10", lambda p: write_tree(p, digits(0)),
         ["'10'", "not a digit label 0-9"]),
        ("folder", "train/2/notes.txt", lambda p: p.write_text("text"),
         ["cannot be read as an image"]),
        ("folder", "test/8", lambda p: _truncate(_first(p), 40), ["cannot be read as an image"]),
        ("folder", "train/9", lambda p: _truncate(_first(p), 150), ["truncated"]),
        ("folder", "train/5/wide.png", _image(np.zeros((28, 30), np.uint8)),
         ["28x30", "expected 28x28", "data.resize=true"]),
        ("folder", "train/6/f.tif", _image(np.full((28, 28), np.nan, np.float32)), ["NaN"]),
        ("folder", "", _no_test_tree, ["has a train/ folder but no test/ folder"]),
        ("folder", "train/7/more", Path.mkdir, ["folder inside class folder 7"]),
        ("mnist", "", lambda p: (p / _TEST_LABELS).unlink(),
         ["no MNIST file t10k-labels-idx1-ubyte"]),
        ("mnist", _TRAIN_IMAGES, lambda p: _truncate(p, 200), ["cannot be read"]),
        ("mnist", "train-images-idx3-ubyte", _cut_plain, ["truncated", "28x28"]),
        ("mnist", _TRAIN_IMAGES, _idx(np.zeros(40, np.uint8)), ["not an IDX image file", "2049"]),
        ("mnist", "train-images-idx3-ubyte", lambda p: p.write_bytes(b"\0\0"),  # was "magic
         ["not an IDX image file (2 bytes, no magic number, expected 2051)"]),  # number None"
        ("mnist", _TEST_LABELS, _idx(np.zeros(19, np.uint8)), ["19 labels", "20 images"]),
        ("mnist", _TEST_LABELS, _idx(np.full(20, 12, np.uint8)),
         ["20 label(s) outside 0-9 (e.g. 12)"]),
    ],
)  # fmt: skip
def test_bad_folder_or_mnist_file_is_one_line_naming_it(
    tmp_path: Path, source: str, where: str, change: Callable[[Path], object], needles: list[str]
) -> None:
    root, cache = tmp_path / source, tmp_path / "cache"
    write, read = {"folder": (write_two_trees, folder), "mnist": (write_mnist, mnist)}[source]
    write(root)
    broken = change(root / where)
    culprit = broken if isinstance(broken, Path) else root / where
    fail(lambda: read(cache, str(root)), str(culprit), *needles)
    assert not cache.exists()  # a failed load caches nothing, not even the good half


def test_a_missing_folder_or_an_unset_path_is_one_line(tmp_path: Path) -> None:
    fail(lambda: folder(None, str(tmp_path / "nowhere")), "nowhere", "no such folder", "data.root")
    fail(lambda: folder(None, None), "data.root is not set")
    (tmp_path / "file").write_text("")
    fail(lambda: folder(None, str(tmp_path / "file")), "file", "is a file, expected a folder")
    fail(lambda: folder(None, str(tmp_path)), str(tmp_path), "holds no class folders")
    fail(lambda: mnist(None, str(tmp_path / "nowhere")), "nowhere", "no such folder")


def test_bad_mat_files(tmp_path: Path) -> None:
    train, test = digits(0), digits(1, per_class=2)
    good_test = tmp_path / "test.mat"
    write_mat(good_test, test, "Test")

    def check(name: str, write: Callable[[Path], object], *needles: str) -> None:
        path = tmp_path / name
        write(path)
        fail(lambda: mat(None, str(path), str(good_test)), str(path), *needles)

    x = as_uint8(train.images).transpose(2, 3, 1, 0)
    y = train.labels.astype(np.float64)[:, None]

    def save(**variables: np.ndarray) -> Callable[[Path], None]:
        return lambda path: scipy.io.savemat(path, variables)

    def categorical(path: Path) -> None:
        save(XTrain=x)(path)
        with open(path, "ab") as f:
            f.write(matlab_object("YTrain", "categorical"))

    fail(lambda: mat(None, str(tmp_path / "no.mat"), str(good_test)), "no.mat", "no such file")
    fail(lambda: mat(None, str(good_test), None), "data.test_file is not set")
    check(
        "categorical.mat",
        categorical,
        "YTrain is a MATLAB categorical",
        "YTrain = double(string(YTrain)); save('categorical.mat', 'YTrain', '-append')",
    )

    def both_categorical(path: Path) -> None:  # digitTrain4DArrayData's and digitTest4D...'s
        categorical(path)
        with open(path, "ab") as f:
            f.write(matlab_object("YTest", "categorical"))

    check("both.mat", both_categorical, "YTrain = double(string(YTrain)); YTest = double(string("
          "YTest)); save('both.mat', 'YTrain', 'YTest', '-append')")  # fmt: skip
    check(  # as the example holds its images: double() of it would be a dlarray still
        "dlarray.mat",
        lambda p: (save(YTrain=y)(p), open(p, "ab").write(matlab_object("XTrain", "dlarray"))),
        "XTrain = gather(extractdata(XTrain)); save('dlarray.mat', 'XTrain', '-append')",
    )
    check(
        "v73.mat", v73_file, "v7.3", "S = load('v73.mat'); save('v73.mat', '-struct', 'S', '-v7')"
    )
    unreadable = "cannot be read as a MATLAB .mat file"
    check("text.mat", lambda p: p.write_text("hello"), unreadable)
    check("cut.mat", lambda p: (save(XTrain=x, YTrain=y)(p), _truncate(p, 3000)), unreadable)
    # cut in a variable before XTrain, skipped unread: was "has no variable 'XTrain'"
    cut = lambda p: (save(XTest=x, XTrain=x, YTrain=y)(p), _truncate(p, p.stat().st_size // 4))  # noqa: E731
    check("cut_x.mat", cut, unreadable)
    check("huge.mat", save(XTrain=x, YTrain=y * 1e20), "outside 0-9", "e+20)")  # was wrapped
    check("noy.mat", save(XTrain=x, labels=y), "no variable 'YTrain'", "XTrain, labels")
    check("count.mat", save(XTrain=x, YTrain=y[:-1]), "40 images but YTrain holds 39 labels")
    check(
        "range.mat",
        save(XTrain=x, YTrain=y + 1),
        "label(s) outside 0-9 (e.g. 10); 1-10 are category numbers: subtract 1",
    )  # MATLAB's double(YTrain) of a categorical
    check("bytes.mat", save(XTrain=x.astype(np.float64), YTrain=y), "span [0, 255], expected "
          "[0, 1]; divide them by 255")  # fmt: skip
    check("frac.mat", save(XTrain=x, YTrain=y + 0.5), "not whole numbers")
    one_hot = (np.arange(10)[:, None] == train.labels).astype(np.float64)  # the example's dummies
    check("onehot.mat", save(XTrain=x, YTrain=one_hot), "YTrain is 10x40 in MATLAB, expected a "
          "vector of 40 labels; one-hot labels become digits in MATLAB with: [~, YTrain] = "
          "max(YTrain, [], 1); YTrain = YTrain - 1")  # fmt: skip
    check("onehot_rows.mat", save(XTrain=x, YTrain=one_hot.T), "max(YTrain, [], 2)")
    # were "not a numeric array (it is a MATLAB cell, struct or object)" and "a struct or object"
    check("complex.mat", save(XTrain=x * (1 + 1j), YTrain=y), "XTrain holds complex numbers")
    save(XTrain=x, YTrain=scipy.sparse.csc_matrix(y))(tmp_path / "sparse.mat")  # read in full
    assert (mat(None, tmp_path / "sparse.mat", good_test)[0].labels == train.labels).all()
    nan = train.images.transpose(2, 3, 1, 0).astype(np.float64)
    nan[3, 4, 0, 5] = np.nan
    check("nan.mat", save(XTrain=nan, YTrain=y), "1 image(s) contain NaN")
    check("rgb.mat", save(XTrain=x.repeat(3, axis=2), YTrain=y), "28x28x3x40", "expected 28x28x1xN")
    words = np.empty((40, 1), dtype=object)
    words[:] = "seven"
    check("words.mat", save(XTrain=x, YTrain=words), "'seven'", "not a digit")
    check("chars.mat", save(XTrain=x, YTrain=np.full((40, 1), "x")), "the label 'x', which")


# ---------------------------------------------------------------------------------------------
# Configs and the CLI


# A seconds-long run on the 40-image fixtures (TINY's keys are the generator's own).
RUN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "data.batch_size=8",
    "data.test_batch_size=64",
    "logger=none",
]


def _fixture(kind: str, root: Path) -> list[str]:
    if kind == "folder-train-test":
        write_two_trees(root)
        return ["data=folder", f"data.root={root}"]
    if kind == "folder-single-tree":
        write_tree(root, digits(0))
        return ["data=folder", f"data.root={root}", "data.split_seed=1"]
    if kind == "mat":
        root.mkdir()
        write_mat(root / "train.mat", digits(0), "Train", "cellstr")
        write_mat(root / "test.mat", digits(1, per_class=2), "Test", "char")
        return ["data=mat", f"data.train_file={root}/train.mat", f"data.test_file={root}/test.mat"]
    write_mnist(root, gz=True)
    return ["data=mnist", f"data.root={root}"]


def test_a_relative_data_path_is_stored_whole_in_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluated from another folder, a checkpoint trained on data.root=ds said its data was
    gone."""
    from src.checkpoint import read_checkpoint
    from src.train import train
    from tests.conftest import compose_config

    _fixture("folder-train-test", tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(compose_config([*RUN, "data=folder", "data.root=ds"], run, tmp_path / "cache"))
    saved = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["config"]["data"]["root"] == str(tmp_path / "ds")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder-train-test", "folder-single-tree", "mat", "mnist"])
def test_cli_trains_on_each_format(tmp_path: Path, kind: str) -> None:
    run_dir = tmp_path / "run"
    args = _fixture(kind, tmp_path / "data")
    proc = cli_in_process(*RUN, *args, f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/acc" in metrics
    assert metrics["global_step"] == (20 if kind == "folder-single-tree" else 40) // 8
    # The data moved since: evaluating the checkpoint says so before any run folder, and is
    # told the new place on the command line.
    (tmp_path / "data").rename(tmp_path / "moved")
    ckpt, run = run_dir / "checkpoints" / "last.ckpt", tmp_path / "eval"
    proc = cli_in_process(f"ckpt_path={ckpt}", f"hydra.run.dir={run}", module="src.evaluate")
    assert_one_line_error(proc, str(tmp_path / "data"), "no longer there", "+data.KEY=PATH")
    assert not run.exists()
    if kind == "folder-train-test":
        proc = cli_in_process(f"ckpt_path={ckpt}", f"+data.root={tmp_path / 'moved'}",
                              f"hydra.run.dir={run}", module="src.evaluate")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        tested = json.loads((run / "metrics.json").read_text())
        assert tested["test/acc"] == metrics["test/acc"]
        # Tested on a set smaller than a training mini-batch (data.batch_size=128 > 40 images):
        # no training, so no mini-batch to cut (was refused, after the run folder).
        moved = ["data=folder", f"data.root={tmp_path / 'moved'}", f"ckpt_path={ckpt}"]
        for module, more in (("src.evaluate", []), ("src.train", ["train=false", *RUN[:1]])):
            proc = cli_in_process(*moved, *more, f"hydra.run.dir={tmp_path / module}",
                                  module=module)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            tested = json.loads((tmp_path / module / "metrics.json").read_text())
            assert tested["test/acc"] == metrics["test/acc"], module


@pytest.mark.slow
def test_cli_bad_image_is_one_line_and_leaves_caches_and_runs_alone(tmp_path: Path) -> None:
    root, cache = tmp_path / "digits", tmp_path / "cache"
    write_two_trees(root)
    folder(cache, str(root))  # an earlier run's cache of this very tree
    earlier = tmp_path / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"test/acc": 0.5}\n')
    before = snapshot(cache, earlier)
    assert len(before) == 3

    bad = _truncate(_first(root / "train" / "7"), 120)
    proc = cli_in_process(*RUN, "data=folder", f"data.root={root}", f"paths.cache_dir={cache}",
                          f"hydra.run.dir={tmp_path / 'runs' / 'new'}")  # fmt: skip
    assert_one_line_error(proc, str(bad), "cannot be read as an image")
    assert snapshot(cache, earlier) == before
    assert not (tmp_path / "runs" / "new" / "metrics.json").exists()
