"""The ``headstart`` command: a thin typer layer over the library; it parses, calls and prints."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from headstart.errors import HeadstartError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fine-tune pretrained models on your own small dataset.")


# Task name -> "module:Facade". Every facade offers the same methods: __init__(config=, overrides=,
# **shortcuts), fit(data, out=), resume(run), load(run), evaluate(data), predict(inputs, top_k=).
FACADES = {
    "image": "headstart.api:ImageClassifier",
    "image-classification": "headstart.api:ImageClassifier",
    "text": "headstart.text_api:TextClassifier",
    "text-classification": "headstart.text_api:TextClassifier",
    "detection": "headstart.detection_api:Detector",
}


def facade(task: str):
    """The facade class of a task name (``image``...) or of a run folder's recorded task."""
    import importlib

    if task not in FACADES:
        raise ValueError(f"Unknown task '{task}'; expected one of {', '.join(sorted(FACADES))}")
    module, _, name = FACADES[task].partition(":")
    return getattr(importlib.import_module(module), name)


def facade_for_run(run: Path):
    from headstart.runs import read_meta

    return facade(read_meta(run)["task"])


def _fail(exc: Exception) -> None:
    from headstart.progress import console

    console.print(f"[bold red]Error:[/] {exc}")
    raise typer.Exit(2)


def _run(fn):
    """Call ``fn``; user errors become one red line and exit code 2, Ctrl-C says how to resume."""
    try:
        return fn()
    except (HeadstartError, ValueError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        from headstart.progress import console

        console.print("[bold yellow]Interrupted.[/] The last finished epoch is saved; continue with "
                      "'headstart train --resume RUN'.")
        raise typer.Exit(130) from None


@app.command()
def models(pattern: str | None = typer.Argument(None, help="wildcard, e.g. '*lite*', 'tv:resnet*', 'timm:vit_*'"),
           as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the backbones headstart knows and whether their weights are available offline now."""
    from rich.console import Console

    from headstart import registry

    console = Console(width=None if sys.stdout.isatty() else 160)
    rows = _run(lambda: registry.list_models(pattern))
    if as_json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    table = Table(title="Backbones" + (f" matching '{pattern}'" if pattern else ""))
    for col in ("name", "source", "params (M)", "input", "offline now", "weights / how to get them"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.source, f"{r.params_m:.1f}" if r.params_m else "-", str(r.input_size or "-"),
                      "[green]yes[/]" if r.available else "[red]no[/]", r.where)
    console.print(table)
    if not pattern:
        console.print("More: headstart models 'tv:*' (torchvision), headstart models 'timm:resnet*' (timm).")


@app.command()
def train(
    data: Path | None = typer.Argument(None, help="image folder (train/ val/ or class folders) or CSV"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides, e.g. train.lr=3e-4"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run folder to create"),
    model: str | None = typer.Option(None, "--model", "-m", help="backbone name (see 'headstart models')"),
    strategy: str | None = typer.Option(None, "--strategy", "-s",
                                           help="linear | partial:K | full | gradual | lp-ft"),
    epochs: int | None = typer.Option(None, "--epochs", "-e"),
    seed: int | None = typer.Option(None, "--seed"),
    weights: Path | None = typer.Option(None, "--weights", help="local weights file for the backbone"),
    pretrained: bool | None = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="start from pretrained weights (default) or from scratch"),
    strict: bool | None = typer.Option(None, "--strict", help="stop at the first unreadable image"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    resume: Path | None = typer.Option(None, "--resume", help="continue an interrupted run folder"),
    task: str | None = typer.Option(None, "--task", "-t",
                                    help="image | text | detection (default: text for tables of texts, else image)"),
    text_column: str | None = typer.Option(None, "--text-column", help="text: the column holding the texts"),
    label_column: str | None = typer.Option(None, "--label-column", help="the column holding the labels"),
    max_length: int | None = typer.Option(None, "--max-length", help="text: tokens per text (longer ones are cut)"),
    classes: str | None = typer.Option(None, "--classes", help="detection: train on these classes only, e.g. person,car"),
) -> None:
    """Fine-tune a pretrained backbone on DATA and write a run folder."""
    from headstart.config import parse_override

    if resume is not None:
        _run(lambda: facade_for_run(resume).resume(resume))
        return
    if data is None or out is None:
        _fail(ValueError("train needs DATA and --out RUN (or --resume RUN)"))
    if task is None:
        from headstart.data.text import looks_like_text_data

        task = "text" if looks_like_text_data(data) else "image"
    extra = dict(parse_override(o) for o in overrides or [])
    if task in ("text", "text-classification"):
        extra.update({k: v for k, v in {"text.text_column": text_column, "text.label_column": label_column,
                                        "text.max_length": max_length}.items() if v is not None})
    elif text_column is not None or max_length is not None:
        _fail(ValueError(f"--text-column and --max-length are for --task text, not '{task}'"))
    elif label_column is not None:
        extra["data.label_column"] = label_column
    if classes is not None:
        if task != "detection":
            _fail(ValueError(f"--classes applies to --task detection only, not '{task}'"))
        extra["detection.classes"] = [c.strip() for c in classes.split(",") if c.strip()]
    _run(lambda: facade(task)(
        config=config, overrides=extra, model=model, strategy=strategy, epochs=epochs, seed=seed,
        weights=str(weights) if weights else None, pretrained=pretrained, strict=strict,
    ).fit(data, out=out))


@app.command()
def evaluate(run: Path = typer.Argument(..., help="run folder"),
             data: Path = typer.Argument(..., help="labelled images: class folders or CSV"),
             as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON")) -> None:
    """Metrics of a trained model on labelled data, beside the majority-class baseline."""
    from headstart.reports import print_metrics

    def go() -> None:
        report = facade_for_run(run).load(run).evaluate(data)
        if as_json:
            print(json.dumps(report, indent=2))
        elif "map_50" in report:  # a detection run
            from headstart.detection_reports import print_metrics as print_detection_metrics

            print_detection_metrics(report, f"Evaluation of {run} on {data}")
        else:
            print_metrics(report, f"Evaluation of {run} on {data}")

    _run(go)


def _print_detections(rows: list[dict], fmt: str) -> None:
    """Detection rows as JSON, CSV (one line per box) or a table."""
    from headstart.progress import console

    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label", "score", "x1", "y1", "x2", "y2"])
        for r in rows:
            for d in r["detections"]:
                writer.writerow([r["path"], d["label"], f"{d['score']:.4f}", *d["box"]])
        sys.stdout.write(buf.getvalue())
        return
    table = Table()
    for col in ("file", "boxes", "best detections (label score [x1 y1 x2 y2])"):
        table.add_column(col, overflow="fold")
    for r in rows:
        best = "; ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in r["detections"][:5])
        table.add_row(r["path"], str(len(r["detections"])), best)
    console.print(table)


@app.command()
def predict(run: Path = typer.Argument(..., help="run folder"),
            inputs: list[str] | None = typer.Argument(None, help="image files or folders; texts for a text run"),
            file: Path | None = typer.Option(None, "--file", help="text run: a UTF-8 file with one text per line"),
            top_k: int = typer.Option(1, "--top-k", "-k", min=1),
            fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv"),
            save_images: Path | None = typer.Option(None, "--save-images",
                                                    help="detection: write each image with its boxes drawn here")) -> None:
    """Predict the class of each image, with probabilities (detection runs: boxes, labels, scores)."""
    from headstart.progress import console

    if fmt not in {"table", "json", "csv"}:
        _fail(ValueError(f"--format must be table, json or csv, found '{fmt}'"))

    def go() -> None:
        cls = facade_for_run(run)
        items = list(inputs or [])
        if getattr(cls, "__name__", "") == "TextClassifier":
            from headstart.data.text import texts_from_arguments

            items = texts_from_arguments(items, file)
        elif file is not None or (items and not any(Path(i).exists() for i in items)):
            raise ValueError(f"{run} holds an image model, and {str(file or items[0])!r} is not an image file or "
                             "folder: pass image files or folders; classify texts with a text run folder")
        if not items:
            raise ValueError("predict needs inputs: image files/folders, or texts (or --file) for a text run")
        if getattr(cls, "__name__", "") == "Detector":
            _print_detections(cls.load(run).predict(items, save_images=save_images), fmt)
            return
        if save_images is not None:
            raise ValueError(f"--save-images applies to detection runs; {run} holds a classifier")
        rows = cls.load(run).predict(items, top_k=top_k)
        if fmt == "json":
            print(json.dumps(rows, indent=2))
        elif fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(["text" if rows and "text" in rows[0] else "path", "label", "probability", "top_k"])
            for r in rows:
                writer.writerow([r.get("path", r.get("text")), r["label"], f"{r['probability']:.6f}",
                                 ";".join(f"{c}:{p:.6f}" for c, p in r["top_k"])])
            sys.stdout.write(buf.getvalue())
        else:
            table = Table()
            for col in ("text" if rows and "text" in rows[0] else "file", "label", "probability", f"top {top_k}"):
                table.add_column(col, overflow="fold")
            for r in rows:
                table.add_row(r.get("path", r.get("text")), r["label"], f"{r['probability']:.3f}",
                              ", ".join(f"{c} {p:.3f}" for c, p in r["top_k"]))
            console.print(table)

    _run(go)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="run folder"),
         data_dir: Path = typer.Option(Path("data/digits"), "--data", help="where the demo images are written")) -> None:
    """Fine-tune the default backbone on scikit-learn's handwritten digits (real images, offline)."""
    from headstart.api import ImageClassifier
    from headstart.datasets import write_digits
    from headstart.progress import say

    def go() -> None:
        folder = write_digits(data_dir)
        say(f"Demo data: {folder} (scikit-learn digits as PNG class folders)")
        target = out
        if (out / "headstart.json").exists():
            i = 2
            while (out.parent / f"{out.name}-{i}" / "headstart.json").exists():
                i += 1
            target = out.parent / f"{out.name}-{i}"
        ImageClassifier().fit(folder, out=target)

    _run(go)


def _csv_list(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


@app.command()
def compare(
    data: Path = typer.Argument(..., help="image folder or CSV (or a text table with --task text)"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides for every cell, e.g. cache.views=2"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for compare.json, the plots, report.html and the runs"),
    task: str = typer.Option("image", "--task", "-t", help="image | text"),
    models: str | None = typer.Option(None, "--models", help="comma-separated backbones (default: the configured one)"),
    strategies: str = typer.Option("linear,lp-ft,scratch", "--strategies",
                                   help="comma-separated: linear, lp-ft, partial:K, full, gradual, scratch"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeded stratified splits per cell"),
    shots: str | None = typer.Option(None, "--shots", help="learning curve: examples per class, e.g. 5,10,25,all"),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="main-phase epochs of every pretrained strategy"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="validation share of each split"),
    verbose: bool = typer.Option(False, "--verbose", help="show every run's own output"),
) -> None:
    """Compare strategies (and training from scratch) on DATA over seeded splits: table, JSON, plots, report."""
    from headstart import compare as comparison
    from headstart.config import parse_override

    extra = dict(parse_override(o) for o in overrides or [])
    _run(lambda: comparison.compare(data, out, task=task, models=_csv_list(models),
                                    strategy_names=_csv_list(strategies) or [], seeds=seeds,
                                    shots=comparison.parse_shots(shots), val_fraction=val_fraction, epochs=epochs,
                                    overrides=extra, verbose=verbose))


@app.command()
def advise(
    data: Path = typer.Argument(..., help="image folder (class folders or train/ val/) or CSV"),
    budget: float = typer.Option(60.0, "--budget", help="seconds to spend probing (about a minute on a CPU)"),
    models: str | None = typer.Option(None, "--models", help="comma-separated backbones (default: all available)"),
    run: bool = typer.Option(False, "--run", help="then train the recommendation (needs --out)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run folder for --run"),
    as_json: bool = typer.Option(False, "--json", help="print the advice as JSON"),
) -> None:
    """Probe the available backbones on cached features and recommend a backbone and a strategy, saying why."""
    from headstart import advise as advisor

    if run and out is None:
        _fail(ValueError("advise --run trains the recommendation: give it a run folder with --out RUN"))

    def go() -> None:
        advice = advisor.advise(data, budget_s=budget, models=_csv_list(models))
        if as_json:
            print(json.dumps(advice, indent=2))
        else:
            advisor.print_advice(advice)
        if run:
            from headstart.api import ImageClassifier

            rec = advice["recommendation"]
            ImageClassifier(model=rec["model"], strategy=rec["strategy"]).fit(data, out=out)
            (out / "advice.json").write_text(json.dumps(advice, indent=2))  # why this model and strategy

    _run(go)


if __name__ == "__main__":
    app()
