"""Shared fixtures: real data from ../shared (skipped with a reason when absent) and from PyPI packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HEADSTART_QUIET", "1")
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)  # `make test`: pytest-xdist workers side by side
SHARE = max((os.cpu_count() or 1) // WORKERS, 1)  # this worker's cores
THREADS = min(2, SHARE)  # torch threads of the tests that set device.threads: 2, or fewer when the share is
if WORKERS > 1:  # each worker (and the headstart commands it starts) takes its share of the cores, never all of them
    os.environ.setdefault("OMP_NUM_THREADS", str(SHARE))
    os.environ.setdefault("MKL_NUM_THREADS", str(SHARE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HYMENOPTERA = SHARED / "hymenoptera_data"


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (the ../shared data folder)")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One feature cache for the whole session (tests that check caching use their own)."""
    path = Path(os.environ.get("HEADSTART_CACHE") or tmp_path_factory.mktemp("feature-cache"))
    os.environ["HEADSTART_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's handwritten digits, 20 per class, as PNG class folders (always available)."""
    from headstart.datasets import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"), per_class=20)


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not HYMENOPTERA.exists():
        pytest.skip(f"{HYMENOPTERA} is absent (the ../shared data folder)")
    return HYMENOPTERA


def hymenoptera_subset(root: Path, counts: dict[str, int], link: bool = False) -> Path:
    """The first ``counts[split]`` JPEGs of each class of hymenoptera's splits, copied (or linked) under ``root``."""
    for split, n in counts.items():
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((HYMENOPTERA / split / cls).glob("*.jpg"))[:n]:
                (os.symlink if link else shutil.copy)(f, root / split / cls / f.name)
    return root


def train_cli(data: Path, run: Path, *args: str) -> dict[str, Any]:
    """``headstart train DATA --out RUN ARGS...`` as a user types it; the run's metrics.json (the run must succeed)."""
    import json

    from typer.testing import CliRunner

    from headstart.cli import app

    res = CliRunner().invoke(app, ["train", str(data), "--out", str(run), *args])
    assert res.exit_code == 0, res.output
    return json.loads((run / "metrics.json").read_text())


def write_dicom(path: Path, pixels: Any, photometric: str = "MONOCHROME2", bits: int = 12,
                intercept: float | None = None, window: tuple[float, float] | None = None) -> Path:
    """A DICOM file (secondary capture, explicit VR little endian) holding ``pixels`` as an export would."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.set_pixel_data(pixels, photometric, bits)
    if intercept is not None:
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.save_as(path, enforce_file_format=True)
    return path


SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "test-screenshots"


def _find_chromium() -> str | None:
    import shutil

    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


@pytest.fixture(scope="session")
def chromium():
    """``render(html_file, screenshot_name) -> DOM text``: headless Chromium (Debian's package, installed
    here with apt-get when missing; skipped with the reason when that fails). Screenshots land in
    build/test-screenshots/ for the developer to look at."""
    import subprocess
    import tempfile

    binary = _find_chromium()
    if binary is None:
        try:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                                  env=env, timeout=900)
            if done.returncode != 0:  # a fresh machine: the package lists are not there yet
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
                done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True,
                                      text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium is not installed and 'apt-get install -y chromium' could not run: {exc}")
        binary = _find_chromium()
        if binary is None:
            pytest.skip("chromium is not installed and 'apt-get install -y chromium' failed: "
                        + (done.stderr or done.stdout)[-300:])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def run(args: list[str]) -> subprocess.CompletedProcess:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]
        return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)

    def render(html: Path, screenshot: str) -> str:
        url = Path(html).resolve().as_uri()
        shot = SCREENSHOTS / screenshot
        shot.unlink(missing_ok=True)
        run([f"--screenshot={shot}", "--window-size=1280,2000", url])
        assert shot.is_file() and shot.stat().st_size > 20_000, f"no screenshot of {html}"
        dom = run(["--dump-dom", url])
        assert dom.returncode == 0, dom.stderr[-500:]
        return dom.stdout

    return render
