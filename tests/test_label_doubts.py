"""Training labels to check: items the cross-validation heads, which did not train on them, put in another class."""

from __future__ import annotations

import shutil

from conftest import HYMENOPTERA, needs_shared, train_cli

ANTS_FILED_AS_BEES = ("116570827_e9c126745d.jpg", "1225872729_6f0856588f.jpg")  # plain photos of ants


@needs_shared(HYMENOPTERA)
def test_ants_filed_as_bees_are_listed_with_their_thumbnails(tmp_path, session_cache):
    data = tmp_path / "d"
    shutil.copytree(HYMENOPTERA, data)
    for name in ANTS_FILED_AS_BEES:
        (data / "train" / "ants" / name).rename(data / "train" / "bees" / f"filed_{name}")
    run = tmp_path / "run"
    doubts = train_cli(data, run, "--strategy", "linear", "cache.views=1")["label_doubts"]
    named = {item["item"].rsplit("/", 1)[-1]: item for item in doubts["items"]}
    assert {f"filed_{n}" for n in ANTS_FILED_AS_BEES} <= set(named), doubts
    assert doubts["of"] == 245 and doubts["count"] <= 4, doubts  # the rest of hymenoptera's labels hold
    for name in ANTS_FILED_AS_BEES:
        item = named[f"filed_{name}"]
        assert (item["label"], item["predicted"]) == ("bees", "ants") and item["p_label"] < 0.1 < 0.7 < item["p_predicted"]
    html = (run / "report.html").read_text()
    doubts_html = html[html.index('id="sec-doubts"'):]
    assert all(f'alt="filed_{n}"' in doubts_html for n in ANTS_FILED_AS_BEES)
    assert doubts_html.count("data:image") >= 2  # thumbnails


@needs_shared(HYMENOPTERA)
def test_a_run_without_doubted_labels_says_so(tmp_path, session_cache):
    from conftest import hymenoptera_subset

    data = hymenoptera_subset(tmp_path / "d", {"train": 20, "val": 10})
    run = tmp_path / "run"
    assert train_cli(data, run, "--strategy", "linear", "cache.views=1")["label_doubts"] == {"count": 0, "of": 40,
                                                                                           "items": []}
    assert "No training label was doubted" in (run / "report.html").read_text()


@needs_shared(HYMENOPTERA)
def test_a_run_without_a_cross_validated_head_does_not_claim_a_label_check(tmp_path, session_cache):
    from conftest import hymenoptera_subset

    data = hymenoptera_subset(tmp_path / "d", {"train": 8, "val": 4})
    run = tmp_path / "run"
    assert train_cli(data, run, "--strategy", "full", "--epochs", "1")["label_doubts"] is None  # not checked
    html = (run / "report.html").read_text()
    assert 'id="sec-doubts"' not in html and "No training label was doubted" not in html
