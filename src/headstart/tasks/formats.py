"""Files that hold data in a form headstart does not read (archives, arrays, pickles): what they are and what to do,
for the error that says DATA holds no images or texts. Importing this module imports no torch."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

ARCHIVE = "an archive"  # what_it_is of .zip, .tar.gz...
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".gz", ".tar.bz2", ".bz2", ".tar.xz", ".xz", ".7z", ".rar")
# suffix -> what such files hold; the fix is to write them out as image files (``ARRAY_FIX``)
ARRAY_SUFFIXES = {
    ".npy": "NumPy arrays", ".npz": "NumPy arrays", ".h5": "HDF5 arrays (PCam's, for one)",
    ".hdf5": "HDF5 arrays", ".mat": "MATLAB files", ".pkl": "Python pickles", ".pickle": "Python pickles",
    ".tfrecord": "TFRecords", ".tfrecords": "TFRecords", ".parquet": "Parquet tables (a Hugging Face dataset's images "
    "stored as bytes)", ".arrow": "Arrow tables (a Hugging Face dataset's cache)", ".mdb": "an LMDB database",
    ".lmdb": "an LMDB database",
}
# names without a telling suffix: CIFAR-10's and CIFAR-100's Python pickles, MNIST's IDX files (read when laid out
# as torchvision downloads them: ``arrays.py``; what to do when they are not)
ARRAY_NAMES = (
    (re.compile(r"(data_batch_\d+|test_batch|batches\.meta)"), "CIFAR-10's Python pickles of arrays"),
    (re.compile(r".*-idx\d-ubyte(\.gz)?"), "MNIST's IDX files of arrays"),
)
READ_AS_DOWNLOADED = {
    "CIFAR-10's Python pickles of arrays": "headstart reads them as torchvision downloads them: give the folder "
    "cifar-10-batches-py/ with data_batch_1 ... data_batch_5 (test_batch and batches.meta beside them), or "
    "cifar-100-python/ with train, test and meta",
    "MNIST's IDX files of arrays": "headstart reads them as torchvision downloads them: give the folder with "
    "train-images-idx3-ubyte and train-labels-idx1-ubyte (t10k-* beside them: the test split), or MNIST/raw/",
    "HDF5 arrays (PCam's, for one)": "headstart reads PCam's as torchvision downloads them: give the folder with "
    "*_train_x.h5 and *_train_y.h5 (datasets 'x' and 'y'; _valid_ and _test_ beside them), unpacked from .h5.gz",
}
ARRAY_FIX = ("write them out as image files, one folder per class (e.g. PIL.Image.fromarray(array).save("
             "f'{label}/{i}.png')), or download the dataset's image-file version")
LOOKED_AT = 200  # files looked at under a folder


def what_it_is(path: Path) -> str | None:
    """What a file holds when it is an archive or arrays headstart does not read (None otherwise)."""
    name = path.name.lower()
    if name.endswith(ARCHIVE_SUFFIXES):
        return ARCHIVE
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return ARRAY_SUFFIXES[path.suffix.lower()]
    return next((what for pattern, what in ARRAY_NAMES if pattern.fullmatch(path.name)), None)


def not_data_hint(path: Path) -> str:
    """A sentence for an error about DATA that held no images: what ``path`` (a file, or the files under a folder) is
    instead and what to do, or '' when nothing telling was found."""
    files = [path] if path.is_file() else [p for p in itertools.islice(path.rglob("*"), LOOKED_AT) if p.is_file()]
    found: dict[str, list[Path]] = {}
    for f in files:
        what = what_it_is(f)
        if what is not None:
            found.setdefault(what, []).append(f)
    if not found:
        return ""
    what, examples = max(found.items(), key=lambda item: len(item[1]))
    names = ", ".join(sorted(p.name for p in examples)[:3]) + (", ..." if len(examples) > 3 else "")
    if what == ARCHIVE:
        return f" {'It is' if path.is_file() else 'It holds'} {what} ({names}): {_unpack(examples[0])}."
    return f" It holds {what} ({names}), not image files: {READ_AS_DOWNLOADED.get(what, ARRAY_FIX)}."


def _unpack(archive: Path) -> str:
    """How to unpack ``archive`` into a folder to give as DATA."""
    name = archive.name.lower()
    suffix = next(s for s in ARCHIVE_SUFFIXES if name.endswith(s))
    folder = archive.parent / archive.name[: -len(suffix)]
    if suffix == ".zip":
        command = f"unzip '{archive}' -d '{folder}'"
    elif ".tar" in suffix or suffix == ".tgz":
        command = f"mkdir -p '{folder}' && tar -xf '{archive}' -C '{folder}'"
    else:
        command = f"7z x '{archive}' -o'{folder}'"
    return f"unpack it first (`{command}`) and give the folder"


# in a class folder, files that are not images: named and counted by ``unread_note``, not read
VIDEO_SUFFIXES = (".mov", ".mp4", ".m4v", ".avi", ".mkv", ".webm", ".3gp", ".wmv", ".mpg", ".mpeg")  # a phone's clips
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw")  # cameras' RAW photos
SIDECARS = (".aae", ".xmp", ".json", ".db", ".ini", ".txt", ".xml", ".csv", ".md", ".log")  # beside photos: not said
SHOWN = 4  # suffixes named in the note


def unread_note(folders: Sequence[Path], readable: Collection[str]) -> str | None:
    """A note on the files under ``folders`` (class folders) whose suffix is not in ``readable``: counted by suffix,
    with what to do for videos and cameras' RAW photos; None when there are none. Hidden files, files without a
    suffix and metadata beside photos (``SIDECARS``: Thumbs.db, an iPhone's .AAE, Lightroom's .xmp) are not said."""
    found: Counter = Counter()
    example: dict[str, Path] = {}
    for folder in folders:
        for top, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
            for name in names:
                suffix = os.path.splitext(name)[1].lower()
                if name.startswith(".") or not suffix or suffix[1:].isdigit() or suffix in readable or suffix in SIDECARS:
                    continue
                found[suffix] += 1
                example.setdefault(suffix, Path(top, name))
    if not found:
        return None
    kinds = ", ".join(f"{n} {s}" for s, n in found.most_common(SHOWN)) + (", ..." if len(found) > SHOWN else "")
    first = example[found.most_common(1)[0][0]]
    note = (f"{sum(found.values())} file(s) in the class folders are not images headstart reads and were left out "
            f"({kinds}; e.g. {first})")
    videos = sorted(s for s in found if s in VIDEO_SUFFIXES)
    if videos:
        clip = example[videos[0]]
        note += (f"; videos ({', '.join(videos)}): to learn from their frames, write them out as images, e.g. "
                 f"`ffmpeg -i '{clip}' -vf fps=2 '{clip.with_suffix('')}_%03d.jpg'`")
    raw = sorted(s for s in found if s in RAW_SUFFIXES)
    if raw:
        note += f"; cameras' RAW photos ({', '.join(raw)}): export them as JPEG (the camera's software, darktable, rawpy)"
    return note
