"""Batch inference into a file: predict RUN FOLDER --out preds.csv|.jsonl, chunked, resumable, with error rows."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headstart.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_and_folder(digits_dir, tmp_path_factory):
    from headstart.tasks.image.task import ImageClassifier

    tmp = tmp_path_factory.mktemp("batch")
    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(
        digits_dir, out=tmp / "run")
    folder = tmp / "to_predict"
    for digit in ("3", "5"):
        shutil.copytree(digits_dir / digit, folder / digit)
    (folder / "5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return clf, tmp / "run", folder


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_rows_equal_predict_and_an_interrupted_file_is_continued(run_and_folder, tmp_path, monkeypatch):
    import headstart.deploy.batch as batch

    clf, run, folder = run_and_folder
    monkeypatch.setattr(batch, "CHUNK", 8)  # several chunks, each flushed before the next
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(out), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = _csv_rows(out)
    assert rows[0] == ["path", "label", "probability", "top_k", "unfamiliar", "error"]
    files = sorted(str(p) for p in folder.rglob("*.png"))
    assert sorted(r[0] for r in rows[1:]) == files  # one row per file, the unreadable one included
    errors = [r for r in rows[1:] if r[5]]
    assert len(errors) == 1 and errors[0][0].endswith("broken.png") and errors[0][1] == errors[0][4] == ""
    expected = {r["path"]: r for r in clf.predict([f for f in files if "broken" not in f], top_k=2)}
    for r in rows[1:]:
        if not r[5]:
            assert r[1] == expected[r[0]]["label"] and abs(float(r[2]) - expected[r[0]]["probability"]) < 1e-5
            assert len(r[3].split(";")) == 2 and r[4] == str(int(expected[r[0]]["unfamiliar"]))

    # interrupted after 10 rows, in the middle of writing the 11th: a second run adds only the rest
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:11]) + lines[11][:9])
    monkeypatch.setenv("HEADSTART_QUIET", "0")  # show the resume line
    again = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(out), "--top-k", "2"])
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    assert "10 item(s) already predicted, 31 to go" in said and "Wrote 31 row(s)" in said
    assert sorted(map(tuple, _csv_rows(out))) == sorted(map(tuple, rows))  # the same rows, none twice


def test_jsonl_keeps_every_row_and_foreign_files_are_refused(run_and_folder, tmp_path):
    clf, run, folder = run_and_folder
    out = tmp_path / "preds.jsonl"
    result = runner.invoke(app, ["predict", str(run), str(folder / "3"), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and all({"path", "label", "probability", "top_k"} <= set(r) for r in rows)
    expected = {r["path"]: r for r in clf.predict(sorted((folder / "3").glob("*.png")))}  # decoded in 2 processes
    assert {r["path"] for r in rows} == set(expected)
    assert all(r["label"] == expected[r["path"]]["label"] and
               abs(r["probability"] - expected[r["path"]]["probability"]) < 1e-5 for r in rows)
    foreign = tmp_path / "other.csv"
    foreign.write_text("id,score\n1,0.5\n")
    refused = runner.invoke(app, ["predict", str(run), str(folder / "3"), "--out", str(foreign)])
    assert refused.exit_code == 2 and "not written by this run" in " ".join(refused.output.split())
    assert foreign.read_text() == "id,score\n1,0.5\n"  # nothing of the user's file was lost
    bad = runner.invoke(app, ["predict", str(run), str(folder / "3"), "--out", str(tmp_path / "preds.txt")])
    assert bad.exit_code == 2 and ".csv or .jsonl" in bad.output


def test_heat_maps_of_same_named_images_in_different_chunks_do_not_overwrite(run_and_folder, tmp_path, monkeypatch):
    import headstart.deploy.batch as batch

    _, run, folder = run_and_folder
    for name, digit in (("a", "3"), ("b", "5")):  # a/x0.png and b/x0.png...: the same names, different images
        for i, src in enumerate(sorted((folder / digit).glob("*.png"))[:3]):
            (tmp_path / "in" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp_path / "in" / name / f"x{i}.png")
    monkeypatch.setattr(batch, "CHUNK", 2)  # a/x2 and b/x0 share a chunk; a/x0 and b/x0 do not
    out, heat = tmp_path / "p.jsonl", tmp_path / "heat"
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "in"), "--out", str(out), "--save-heatmaps",
                                 str(heat)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and len({r["heatmap"] for r in rows}) == 6  # one file each, named by its folder too
    assert sorted(p.name for p in heat.iterdir()) == sorted(Path(r["heatmap"]).name for r in rows)
    for r in rows:
        assert Path(r["heatmap"]).name == f"{Path(r['path']).parent.name}_{Path(r['path']).stem}_heatmap.png"
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"),
                                 "--save-heatmaps", str(heat)])  # a CSV gains the heat map's column
    assert result.exit_code == 0, result.output
    header, *cells = _csv_rows(tmp_path / "p.csv")
    assert header[-1] == "heatmap" and {c[0]: c[-1] for c in cells} == {r["path"]: r["heatmap"] for r in rows}
    again = runner.invoke(app, ["predict", str(run), str(tmp_path / "in"), "--out", str(tmp_path / "p.csv")])
    assert again.exit_code == 2 and "with these options" in " ".join(again.output.split())  # other columns: refused
