"""The ``headstart`` command: a thin typer layer over the library; it parses, calls and prints.

Tasks come from the registry (``headstart.tasks``). Nothing heavy is imported at start, so that
``headstart --help`` answers at once: torch and the rest load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from headstart.errors import ConfigError, DataError, HeadstartError
from headstart.tasks import get_task, resolve_task, task_names, task_of_run

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fine-tune pretrained models on your own small dataset.")
TASKS_HELP = " | ".join(task_names())


_DEBUG = {"on": False}  # --debug: let exceptions through with their traceback


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error")) -> None:
    """Fine-tune pretrained models on your own small dataset."""
    _DEBUG["on"] = debug


def _fail(exc: Exception | str) -> None:
    from rich.markup import escape

    from headstart.progress import console

    console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)  # unbroken paths, to copy
    raise typer.Exit(2)


def os_error_message(exc: OSError) -> str:
    """An OSError as one line naming the file and what to do (disk full: the free space left there)."""
    import errno
    import shutil

    path = exc.filename or ""
    what = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        where = Path(path).parent if path else Path.cwd()
        while not where.exists() and where != where.parent:
            where = where.parent
        free = shutil.disk_usage(where).free / 2**20
        return f"No space left on the device while writing {path or 'a file'} ({free:.0f} MB free there): free some " \
               "space or write elsewhere (--out, cache.dir), then resume with 'headstart train --resume RUN'"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Cannot write or read {path or 'a file'}: {what}. Choose a folder you can write to (--out, cache.dir)"
    return f"{what}: {path}" if path else what


def default_run_folder(data: Path, root: Path = Path("runs")) -> Path:
    """``runs/NAME`` for DATA's name (``runs/NAME-2``, ``-3``... when taken), as Ultralytics numbers its runs."""
    name = (data.resolve().stem or "run").replace(" ", "_")
    candidate, n = root / name, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def _run(fn):
    """Call ``fn``; errors a user can cause become one red line and exit code 2 (``--debug``: the traceback),
    Ctrl-C says how to resume."""
    if _DEBUG["on"]:
        return fn()
    try:
        return fn()
    except (HeadstartError, ValueError) as exc:
        _fail(exc)
    except OSError as exc:
        _fail(os_error_message(exc))
    except KeyboardInterrupt:
        from headstart.progress import console

        console.print("[bold yellow]Interrupted.[/] The last finished epoch is saved; continue with "
                      "'headstart train --resume RUN'.")
        raise typer.Exit(130) from None


def _overrides(items: list[str] | None) -> dict:
    from headstart.config import parse_override

    return dict(parse_override(o) for o in items or [])


@app.command()
def models(pattern: str | None = typer.Argument(None, help="wildcard, e.g. '*lite*', 'tv:resnet*', 'timm:vit_*'"),
           as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the backbones headstart knows and whether their weights are available offline now."""
    from rich.table import Table

    from headstart.core.backbones import registry
    from headstart.progress import results

    console = results()
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
    data: Path | None = typer.Argument(None, help="data: image folder or CSV, text table, YOLO folder or COCO json"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides, e.g. train.lr=3e-4"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run folder to create (default: runs/NAME of DATA, "
                                    "runs/NAME-2... when taken)"),
    model: str | None = typer.Option(None, "--model", "-m", help="backbone name (see 'headstart models')"),
    strategy: str | None = typer.Option(None, "--strategy", "-s",
                                        help="auto (images) | linear | partial:K | full | gradual | lp-ft | lora (text, ViT)"),
    epochs: int | None = typer.Option(None, "--epochs", "-e"),
    time_budget: float | None = typer.Option(None, "--time-budget",
                                             help="seconds of training (auto's default: 300; 0: no limit)"),
    refit: bool | None = typer.Option(None, "--refit/--no-refit",
                                      help="after validation chose the recipe, train it again on train + validation and "
                                      "save that model (default: the task's; auto refits when validation was held "
                                      "out of DATA, not when DATA has its own validation split)"),
    seed: int | None = typer.Option(None, "--seed"),
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="the rule choosing, on validation, the threshold on p(positive) that decides: "
        "argmax (default) | f1 | youden | 'recall>=0.95' | 'specificity>=0.9' | 'precision>=0.9' (positive: of two "
        "classes the rarer; train.positive_class=NAME names it, as more classes need)"),
    weights: Path | None = typer.Option(None, "--weights", help="local weights file for the backbone"),
    pretrained: bool | None = typer.Option(None, "--pretrained/--no-pretrained",
                                           help="start from pretrained weights (default) or from scratch"),
    strict: bool | None = typer.Option(None, "--strict", help="stop at the first unreadable item"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    resume: Path | None = typer.Option(None, "--resume", help="continue an interrupted run folder"),
    task: str | None = typer.Option(None, "--task", "-t", help=f"{TASKS_HELP} (default: inferred from DATA)"),
    text_column: str | None = typer.Option(None, "--text-column", help="text: the column holding the texts, or several "
                                               "read as one (title,description; sentence1,sentence2)"),
    label_column: str | None = typer.Option(None, "--label-column", help="the column holding the labels"),
    max_length: int | None = typer.Option(None, "--max-length", help="text: tokens per text (longer ones are cut)"),
    classes: str | None = typer.Option(None, "--classes", help="detection: train on these classes only, e.g. person,car"),
    from_detection: bool | None = typer.Option(None, "--from-detection",
                                               help="multilabel: DATA is a detection set (YOLO, COCO, Pascal VOC); "
                                               "each image is tagged with the classes of its boxes"),
    add: list[Path] | None = typer.Option(None, "--add", help="image and text classification: a labelled table (the "
                                          "filled to_label.csv of 'headstart suggest', a CSV of path,label or "
                                          "text,label) whose items join DATA's training split; repeat for several"),
) -> None:
    """Fine-tune a pretrained backbone on DATA and write a run folder."""
    if resume is not None:
        _run(lambda: task_of_run(resume).estimator_class().resume(resume))
        return
    if data is None:
        _fail(ValueError("train needs DATA (and --out RUN; or --resume RUN)"))
    if out is None:
        from rich.markup import escape

        from headstart.progress import say

        out = default_run_folder(data)
        say(escape(f"No --out given: the run folder is {out}"))
    task_keywords = {"text_column": text_column, "label_column": label_column, "max_length": max_length,
                     "classes": classes, "from_detection": from_detection,
                     "add": [str(a) for a in add] if add else None}

    def go() -> None:
        from headstart.core.estimator import build_config

        chosen = resolve_task(task or ("multilabel" if from_detection else None), data)
        arguments = dict(
            config=config, overrides=_overrides(overrides), model=model, strategy=strategy, epochs=epochs, seed=seed,
            weights=str(weights) if weights else None, pretrained=pretrained, strict=strict, time_budget=time_budget,
            refit=refit, operating_point=operating_point, **{k: v for k, v in task_keywords.items() if v is not None})
        build_config(chosen, **arguments)  # a wrong key or value fails now, before torch and the task's modules load
        chosen.estimator_class()(**arguments).fit(data, out=out)

    _run(go)


@app.command()
def check(
    data: Path = typer.Argument(..., help="data of any task, as train takes it"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides, e.g. data.val_fraction=0.3"),
    task: str | None = typer.Option(None, "--task", "-t", help=f"{TASKS_HELP} (default: inferred from DATA)"),
    model: str | None = typer.Option(None, "--model", "-m", help="the backbone whose preprocessing reads the images"),
    labels: bool = typer.Option(False, "--labels", help="image and text classification: also fit the linear head "
                                "by cross-validation on the items' features and list the training labels to check"),
    add: list[Path] | None = typer.Option(None, "--add", help="image and text classification: a labelled table "
                                          "whose items train would add to DATA's training split (as train --add)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    fail_on_warnings: bool = typer.Option(False, "--fail-on-warnings",
                                          help="exit with code 1 when an item was skipped, a warning was given or "
                                          "(--labels) a label was doubted"),
) -> None:
    """Read DATA as train would, without training, and say what it found.

    Its layout, classes and splits, what was skipped and why, and every warning
    (duplicates and near-copies across the splits, shortcuts, small classes...)."""

    def go() -> None:
        chosen = resolve_task(task, data)
        added = {"add": [str(a) for a in add]} if add else {}
        estimator = chosen.estimator_class()(overrides=_overrides(overrides), model=model, **added)
        if labels and not getattr(estimator, "LABEL_CHECK", False):
            raise ValueError(f"check --labels lists doubted labels of single-label image and text classification; "
                             f"DATA is read as {chosen.name} data (check it without --labels)")
        report = estimator.check_labels(data) if labels else estimator.check(data)
        if as_json:
            print(json.dumps(report, indent=2))
        doubted = (report.get("label_doubts") or {}).get("count", 0)
        if fail_on_warnings and (report["skipped"] or report["warnings"] or doubted):
            raise typer.Exit(1)

    _run(go)


@app.command()
def evaluate(run: Path = typer.Argument(..., help="run folder"),
             data: Path = typer.Argument(..., help="labelled data in the layout the run was trained on"),
             as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON")) -> None:
    """Metrics of a trained model on labelled data, beside the baseline."""

    def go() -> None:
        estimator = task_of_run(run).estimator_class().load(run)
        report = estimator.evaluate(data)
        if as_json:
            print(json.dumps(report, indent=2))
        else:
            estimator.print_metrics(report, f"Evaluation of {run} on {data}")

    _run(go)


# predict's options that add to each item's output: (option, the tasks it applies to, PyTorch engine only)
SAVED_OUTPUTS = {"save_images": ("--save-images", {"detection"}, True),
                 "save_masks": ("--save-masks", {"segmentation"}, False),  # the ONNX engine writes them too
                 "save_heatmaps": ("--save-heatmaps", {"image", "multilabel"}, True),
                 "evidence": ("--evidence", {"text", "text-multilabel"}, True)}


@app.command()
def predict(run: Path = typer.Argument(..., help="run folder"),
            inputs: list[str] | None = typer.Argument(None, help="image files or folders; texts for a text run"),
            file: Path | None = typer.Option(None, "--file", help="text run: a UTF-8 file with one text per line"),
            top_k: int | None = typer.Option(None, "--top-k", "-k", min=1,
                                             help="classes per item (default 1); detection: boxes per image (default all)"),
            fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv"),
            save_images: Path | None = typer.Option(None, "--save-images",
                                                    help="detection: write each image with its boxes drawn here"),
            save_masks: Path | None = typer.Option(None, "--save-masks",
                                                   help="segmentation: write each image's class-index PNG and a "
                                                   "coloured overlay here"),
            save_heatmaps: Path | None = typer.Option(None, "--save-heatmaps",
                                                      help="image classification: write where the model looked for "
                                                           "its prediction (a Grad-CAM heat map over each image) here"),
            evidence: bool = typer.Option(False, "--evidence",
                                          help="text classification: the words each prediction rests on, with their "
                                               "weights (how much the class's log-odds drop without each)"),
            engine: str = typer.Option("torch", "--engine",
                                       help="torch | onnx (ONNX Runtime on RUN/model.onnx, exported first if absent)"),
            out: Path | None = typer.Option(None, "--out", "-o",
                                            help="write the rows to FILE.csv or FILE.jsonl as they are predicted, in "
                                                 "chunks (big folders); run again to continue an interrupted one"),
            workers: int | None = typer.Option(None, "--workers", min=0,
                                               help="--out, image runs: processes decoding the files (default: the "
                                                    "run's data.num_workers, else one per spare core, at most 4)"),
            ) -> None:
    """Predict each input with the run's model.

    Classes with probabilities; detection runs: boxes; segmentation runs: the
    share of pixels per class, --save-masks for the masks."""
    if fmt not in {"table", "json", "csv"}:
        _fail(ValueError(f"--format must be table, json or csv, found '{fmt}'"))
    if engine not in {"torch", "onnx"}:
        _fail(ValueError(f"--engine must be torch or onnx, found '{engine}'"))

    def go() -> None:
        chosen = task_of_run(run)
        cls = chosen.estimator_class()
        items = cls.cli_inputs(list(inputs or []), file, run)
        if not items:
            raise ValueError(f"predict needs inputs: {chosen.inputs} (or --file for a text run)")
        given = {"save_images": save_images, "save_masks": save_masks, "save_heatmaps": save_heatmaps,
                 "evidence": evidence or None}
        extra = {k: v for k, v in given.items() if v is not None}
        for key in extra:
            option, tasks, torch_only = SAVED_OUTPUTS[key]
            if chosen.name not in tasks:
                raise ValueError(f"{option} applies to {' and '.join(sorted(tasks))} runs, not to {run} "
                                 f"({chosen.name})")
            if torch_only and engine == "onnx":
                raise ValueError(f"{option} draws with the PyTorch engine: drop --engine onnx")
        if engine == "onnx":
            from headstart.deploy import export

            predictor = export.onnx_engine_of(run)  # RUN/model.onnx, exported (with its parity check) if absent
            printer = cls  # printing needs the class's columns only, not a loaded model
        else:
            predictor = printer = cls.load(run)
        if out is not None:
            from headstart.deploy.batch import STREAMED_TASKS, default_workers, predict_to_file, stream_image_rows

            if out.suffix == ".csv" and chosen.name not in ("image", "text"):  # before a line is written
                raise ConfigError(f"--out FILE.csv holds single-label classification rows; write this {chosen.name} "
                                  "run's predictions to a .jsonl file instead")

            name = getattr(cls, "item_name", str)
            if chosen.inputs != "texts":  # one row per image file (or table row), so a second run skips done ones
                from headstart.tasks.image.pixel_tables import item_name, prediction_items

                items, name = prediction_items(items), item_name
            key = getattr(cls, "ITEM_KEY", "path")
            for option in ("save_images", "save_masks", "save_heatmaps"):  # named once: chunks never share a name
                if option in extra:
                    from headstart.tasks.image.decode import OutputFolder

                    extra[option] = OutputFolder.of(extra[option], [name(i) for i in items])

            def rows_of(chunk: list) -> list[dict]:  # segmentation masks (arrays) go to --save-masks, not the file
                return [{k: v for k, v in r.items() if k != "mask"}
                        for r in predictor.predict(chunk, top_k=top_k, errors=True, **extra)]

            stream = None
            if engine == "torch" and chosen.name in STREAMED_TASKS and all(isinstance(i, Path) for i in items) \
                    and not extra:  # heat maps are drawn in the model's own pass
                # a DataLoader whose workers decode the files (a table's rows are already in memory)
                n = default_workers(predictor.config.data.num_workers) if workers is None else workers
                stream = lambda todo: stream_image_rows(predictor, todo, top_k, n)  # noqa: E731
            explained = [c for c, option in (("heatmap", "save_heatmaps"), ("evidence", "evidence")) if option in extra]
            counts = predict_to_file(rows_of, items, out, key, stream=stream, name=name, explained=explained)
            if counts["written"] and counts["written"] == counts["errors"]:
                raise DataError(f"Nothing could be predicted: none of the {counts['written']} input(s) could be read "
                                f"(each is listed in {out} with its reason)")
            return
        rows = predictor.predict(items, top_k=top_k, errors=True, **extra)  # unreadable inputs: rows with "error"
        if not any("error" not in r for r in rows):  # no output, and each input's reason in the error
            item = getattr(printer, "ITEM_KEY", "path")
            reasons = "; ".join(f"{r.get(item)}: {r['error']}" for r in rows[:5]) + ("..." if len(rows) > 5 else "")
            raise DataError(f"Nothing could be predicted: none of the {len(rows) or len(items)} input(s) could be "
                            f"read ({reasons or 'no input'})")
        printer.print_predictions(rows, fmt, top_k or 1)
        from headstart.core import runfolder

        spec = runfolder.read_spec(run)
        if spec.get("operating_point") and fmt == "table":  # a label whose probability is under 0.5 is no mistake
            from headstart.progress import say
            from headstart.tasks.classification.operating_point import OperatingPoint

            point = OperatingPoint.from_dict(spec["operating_point"], spec["classes"])
            say(f"Decided at the run's operating point: {point.describe(spec['classes'])}")
        drawn = sum("heatmap" in r for r in rows)
        if drawn:
            from headstart.progress import say

            say(f"Heat maps of {drawn} image(s), where the model looked for its prediction: "
                f"{save_heatmaps}/NAME_heatmap.png")

    _run(go)


@app.command()
def suggest(run: Path | None = typer.Argument(None, help="run folder (with --first: the first item of the pile)"),
            pool: list[str] | None = typer.Argument(None, help="unlabelled image files or folders; texts or a table "
                                                               "of them for a text run"),
            file: Path | None = typer.Option(None, "--file", help="texts: a UTF-8 file with one text per line"),
            n: int = typer.Option(50, "--n", "-n", min=1, help="how many items to label next"),
            out: Path | None = typer.Option(None, "--out", "-o",
                                            help="the CSV of items to label, with a label column to fill (default: "
                                                 "RUN/to_label.csv; with --first: to_label.csv)"),
            first: bool = typer.Option(False, "--first",
                                       help="no run yet: the N items to label first, one typical item of each of N "
                                            "groups of the pile by a pretrained model's features"),
            model: str | None = typer.Option(None, "--model", "-m",
                                             help="--first: the pretrained backbone (default: the task's)"),
            task: str | None = typer.Option(None, "--task", "-t",
                                            help="--first: image | text (default: told from the pile)"),
            ) -> None:
    """Which unlabelled items to label next, written to a CSV with an empty label column.

    The N the model is least sure of, unlike one another (active learning);
    with --first and no run yet, the N that cover the pile."""

    def go() -> None:
        from headstart.progress import say
        from headstart.tasks.classification.suggest import write_csv

        if first:
            pile = [str(run)] * (run is not None) + list(pool or [])
            if not pile and file is None:
                raise ValueError("suggest --first needs the unlabelled pile: image files or folders, texts, or --file")
            chosen = resolve_task(task or ("text" if file is not None and not pile else None), pile[0] if pile
                                  else file)
        else:
            if run is None:
                raise ValueError("suggest needs a run folder (or --first, to choose the first items to label)")
            if model or task:
                raise ValueError("--model and --task choose the pretrained backbone of --first; a run suggests with "
                                 "its own model")
            if not (run / "spec.json").is_file() and run.exists():
                raise ConfigError(f"{run} is not a run folder: train a run on the items labelled so far first, or "
                                  "add --first to choose the first items to label")
            pile, chosen = list(pool or []), task_of_run(run)
        cls = chosen.estimator_class()
        if not hasattr(cls, "suggest"):
            raise ConfigError(f"suggest picks items for classification (image, text, multi-label); this is a "
                              f"{chosen.name} {'pile' if first else 'run'}")
        items = cls.cli_inputs(pile, file, None if first else run)
        if not items:
            raise ValueError(f"suggest needs the unlabelled pool: {chosen.inputs} (or --file for texts)")
        estimator = cls(model=model) if first else cls.load(run)
        rows = estimator.suggest_first(items, n) if first else estimator.suggest(items, n)
        seen = estimator.weighed_
        if not rows:
            raise DataError(f"Nothing to suggest: none of the {seen['read']} readable item(s) is new "
                            f"({seen['labelled']} labelled already, {seen['repeated']} repeats)")
        target = out or (Path("to_label.csv") if first else run / "to_label.csv")
        key = cls.ITEM_KEY
        write_csv(rows, target, key)
        _print_suggestions(rows, key)
        left = ", ".join(f"{k} {what}" for what, k in (("labelled already", seen["labelled"]),
                                                        ("repeats", seen["repeated"])) if k)
        told = f"{len(rows)}[/] of {seen['read']} item(s){f' ({left}: left out)' if left else ''}"
        if first:
            say(f"[bold]{told} to label first, one typical of each group of the pile, biggest groups first: "
                f"{target}. Fill the label column and train a run on them; then 'headstart suggest RUN PILE' picks "
                "the next ones")
            return
        guessed: dict[str, int] = {}
        for r in rows:
            for label in [r["label"]] if "label" in r else [t["label"] for t in r["labels"]] or ["(none)"]:
                guessed[label] = guessed.get(label, 0) + 1
        say(f"[bold]{told} to label next, least sure first: {target}. The model guesses "
            f"{', '.join(f'{c} {k}' for c, k in sorted(guessed.items()))}. Fill the label column (the guess is no "
            f"label), then train again with them: {_next_round(run, estimator, target)}")

    _run(go)


def _next_round(run: Path, estimator: Any, target: Path) -> str:
    """The command that trains the next round (into runs/NAME-2...): the run's DATA with the tables the run added
    and ``target`` (``--add``); for a task that reads no ``--add``, what to do instead."""
    import shlex

    from headstart.core import runfolder

    if "add" not in get_task(estimator.TASK).shortcuts:
        return "add their rows to the training data"
    data = runfolder.read_meta(run).get("data", "DATA")
    tables = [*estimator.config.data.add, str(target)]
    return shlex.join(["headstart", "train", data, *(a for t in dict.fromkeys(tables) for a in ("--add", t))])


def _print_suggestions(rows: list[dict], key: str) -> None:
    from rich.table import Table

    from headstart.progress import results
    from headstart.tasks.classification.suggest import guesses

    table, guessed = Table(), "margin" in rows[0]
    for col in ("#", "text" if key == "text" else "file", *(("guess", "runner-up", "margin") if guessed else
                                                            ("items like it",))):
        table.add_column(col, overflow="fold")
    for r in rows:
        if not guessed:
            table.add_row(str(r["rank"]), r[key], str(r["group_size"]))
            continue
        (guess, p), (other, q) = guesses(r)
        table.add_row(str(r["rank"]), r[key] + (" [yellow](unfamiliar)[/]" if r.get("unfamiliar") else ""),
                      f"{guess} {p:.2f}", f"{other} {q:.2f}" if other else "-", f"{r['margin']:.3f}")
    results().print(table)


@app.command()
def export(run: Path = typer.Argument(..., help="run folder"),
           fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript"),
           dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--no-dynamic-batch",
                                              help="any batch size (default) or batches of one"),
           fp16: bool = typer.Option(False, "--fp16", help="half-precision weights"),
           int8: bool = typer.Option(False, "--int8", help="ONNX int8: dynamic (text) or static, calibrated (images)"),
           data: Path | None = typer.Option(None, "--data", help="data for the parity check (default: the run's)"),
           out: Path | None = typer.Option(None, "--out", "-o", help="file to write (default: RUN/model.onnx...)"),
           items: int = typer.Option(200, "--items", min=1, help="validation items the parity check runs on"),
           verify: Path | None = typer.Option(None, "--verify", help="check an exported FILE of RUN again instead"),
           as_json: bool = typer.Option(False, "--json", help="print the sidecar (with the parity results) as JSON")) -> None:
    """Export the run's model (ONNX or TorchScript) with a sidecar JSON; a parity check against PyTorch ends it."""

    def go() -> None:
        from headstart.deploy import export as exporter

        if verify is not None:
            meta = exporter.verify_export(run, verify, data=data, max_items=items)
        else:
            meta = exporter.export_run(run, fmt, dynamic_batch=dynamic_batch, fp16=fp16, int8=int8, data=data, out=out,
                                       max_items=items)
        if as_json:
            print(json.dumps(meta, indent=2))
        else:
            exporter.print_parity(meta)

    _run(go)


@app.command()
def serve(run: Path = typer.Argument(..., help="run folder"),
          host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(8000, "--port", "-p"),
          workers: int = typer.Option(1, "--workers", min=1, help="processes, each with its own copy of the model"),
          max_batch: int = typer.Option(32, "--max-batch", min=1,
                                        help="items of concurrent requests per forward pass (1: no batching)"),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0,
                                            help="how long a request waits for others to join its batch"),
          max_items: int = typer.Option(64, "--max-items", min=1, help="items per request"),
          max_bytes: int = typer.Option(32 * 2**20, "--max-bytes", min=1, help="request body size in bytes"),
          max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                         help="pixels per image (checked from its header, before decoding)"),
          timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="seconds a request may wait for its answer"),
          ) -> None:
    """Serve the run's model over HTTP: POST /predict, GET /health, GET /metadata, docs at /docs."""

    def go() -> None:
        import os

        try:
            from headstart.deploy.server import Limits
            from headstart.deploy.server import serve as run_server
        except ImportError as exc:
            raise ConfigError(f"headstart serve needs FastAPI and uvicorn ({exc.name} is missing): "
                              "pip install 'headstart[serve]'") from None

        task_of_run(run)  # a wrong folder fails before anything loads
        os.environ.setdefault("HEADSTART_QUIET", "1")  # no progress bars per batch
        limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_items=max_items, max_bytes=max_bytes,
                        timeout=timeout, max_pixels=max_pixels)
        run_server(run, host=host, port=port, workers=workers, limits=limits)

    _run(go)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="run folder"),
         data_dir: Path = typer.Option(Path("data/digits"), "--data", help="where the demo images are written")) -> None:
    """Fine-tune the default backbone on scikit-learn's handwritten digits (real images, offline)."""

    def go() -> None:
        from headstart.datasets import write_digits
        from headstart.progress import say
        from headstart.tasks.image.task import ImageClassifier

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
    data: Path = typer.Argument(..., help="data of any task: image folder or CSV, text table, detection, "
                                          "multi-label or segmentation set"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides for every cell, e.g. cache.views=2"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for compare.json, the plots, report.html and the runs"),
    task: str | None = typer.Option(None, "--task", "-t", help=f"{TASKS_HELP} (default: inferred from DATA)"),
    models: str | None = typer.Option(None, "--models", help="comma-separated backbones (default: the task's default)"),
    strategies: str = typer.Option("linear,lp-ft,scratch", "--strategies",
                                   help="comma-separated: linear, lp-ft, partial:K, full, gradual, lora, scratch"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeded splits per cell"),
    shots: str | None = typer.Option(None, "--shots", help="learning curve: examples per class, e.g. 5,10,25,all"),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="main-phase epochs of every pretrained strategy"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="validation share of each split"),
    verbose: bool = typer.Option(False, "--verbose", help="show every run's own output"),
) -> None:
    """Compare strategies (and training from scratch) on DATA over seeded splits: table, JSON, plots, report."""

    def go() -> None:
        from headstart.evidence import compare as comparison

        comparison.compare(data, out, task=resolve_task(task, data).name, models=_csv_list(models),
                           strategy_names=_csv_list(strategies) or [], seeds=seeds,
                           shots=comparison.parse_shots(shots), val_fraction=val_fraction, epochs=epochs,
                           overrides=_overrides(overrides), verbose=verbose)

    _run(go)


@app.command()
def advise(
    data: Path = typer.Argument(..., help="data of any task: image folder or CSV, text table, detection, "
                                          "multi-label or segmentation set"),
    overrides: list[str] | None = typer.Argument(None, help="dotted config overrides for the probes and --run, "
                                                 "e.g. data.from_detection=true"),
    budget: float = typer.Option(60.0, "--budget", help="seconds to spend probing (about a minute on a CPU)"),
    task: str | None = typer.Option(None, "--task", "-t", help=f"{TASKS_HELP} (default: inferred from DATA)"),
    models: str | None = typer.Option(None, "--models", help="comma-separated backbones (default: all available)"),
    run: bool = typer.Option(False, "--run", help="then train the recommendation (needs --out)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run folder for --run"),
    as_json: bool = typer.Option(False, "--json", help="print the advice as JSON"),
) -> None:
    """Probe the available backbones on cached features and recommend a backbone and a strategy, saying why."""
    if run and out is None:
        _fail(ValueError("advise --run trains the recommendation: give it a run folder with --out RUN"))

    def go() -> None:
        from headstart.evidence import advise as advisor

        chosen = resolve_task(task, data)
        given = _overrides(overrides)
        advice = advisor.advise(data, budget_s=budget, models=_csv_list(models), overrides=given, task=chosen.name)
        if as_json:
            print(json.dumps(advice, indent=2))
        else:
            advisor.print_advice(advice)
        if run:
            rec = advice["recommendation"]
            # the advice's own settings (e.g. detection.image_size), then what the command line gave, which wins
            chosen.estimator_class()(model=rec["model"], strategy=rec["strategy"],
                                     overrides={**(rec.get("overrides") or {}), **given}).fit(data, out=out)
            (out / "advice.json").write_text(json.dumps(advice, indent=2))  # why this model and strategy

    _run(go)


if __name__ == "__main__":
    app()
