"""headstart's default text recipe vs the Hugging Face ``Trainer`` fine-tuning the same model on the same split.

    python benchmarks/text_classification.py [DATA.tsv] [--train-size N] [--epochs E] [--trainer-epochs E]
                                             [--max-length L] [--tools headstart,trainer]
                                             [--out benchmarks/results/text_classification.json]
    python benchmarks/text_classification.py --train-size 1000 --tools headstart,trainer-lora \
        --set train.strategy=lora --out benchmarks/results/text_lora.json      # LoRA against peft + Trainer

Both start from all-MiniLM-L6-v2 (the packaged ``minilm``) and see the same stratified 80/20 split (seed 0;
``--train-size`` subsamples the training part, the held-out 20 % is always evaluated in full). Wall seconds
cover everything from the texts to validation predictions: tokenising, feature extraction (headstart, cold
cache), training and predicting. headstart runs its default strategy (lp-ft: cached linear phase, then
``--epochs`` of fine-tuning); the Trainer fine-tunes ``AutoModelForSequenceClassification`` for
``--trainer-epochs`` (default: ``--epochs``) epochs at LR 5e-5 with dynamic padding, its usual recipe.
``trainer-lora`` is the same Trainer on peft's LoRA model (``get_peft_model``: r 8, alpha 16, dropout 0.1 on
query/key/value, the classifier trained in full, LR 5e-4 as peft's sequence-classification examples use): what a user
writes for LoRA today, beside ``--set train.strategy=lora`` (the same adapters on the same modules).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from headstart.core.backbones import hf_text  # noqa: E402
from headstart.core.splits import stratified_split  # noqa: E402
from headstart.tasks.classification.metrics import classification_report  # noqa: E402
from headstart.tasks.text.task import TextClassifier  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"


def read_split(path: Path, train_size: int | None, seed: int = 0):
    """``(classes, train rows, val rows)`` of a ``label<TAB>text`` file with a header line."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = [(label, text) for label, text in reader]
    classes = sorted({label for label, _ in rows})
    labels = [classes.index(label) for label, _ in rows]
    train, val = stratified_split(labels, 0.2, seed)
    if train_size and train_size < len(train):
        keep, _ = stratified_split([labels[i] for i in train], 1 - train_size / len(train), seed)
        train = [train[i] for i in keep]
    return classes, [rows[i] for i in train], [rows[i] for i in val]


def run_headstart(classes, train, val, args, folder: Path) -> dict:
    """headstart sees the training texts only (it holds out its own validation share); scored on ``val``."""
    table = folder / "train.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text"])
        writer.writerows(train)
    os.environ["HEADSTART_CACHE"] = str(folder / "cache")
    overrides = {"text.max_length": args.max_length, "device.threads": args.threads}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    started = time.perf_counter()
    clf = TextClassifier(epochs=args.epochs, overrides=overrides).fit(table, out=folder / "run")
    _, probs = clf.predict_proba([text for _, text in val])
    probs = torch.as_tensor(probs)[:, [clf.classes_.index(c) for c in classes]]
    wall = time.perf_counter() - started
    m = clf.metrics_
    report = classification_report(probs.log(), torch.tensor([classes.index(label) for label, _ in val]),
                                   classes)
    phases = ", ".join(f"{p['phase']} {p['epochs']} ep" for p in m.get("phases", []) if p["epochs"])
    return {"tool": "headstart", "recipe": f"{clf.config.train.strategy} ({phases}; kept {m.get('chosen', {}).get('phase')})",
            "wall_seconds": round(wall, 1), "macro_f1": report["macro_f1"], "accuracy": report["accuracy"],
            "minority_f1": report["per_class"][classes[-1]]["f1"], "own_val_macro_f1": m["val_macro_f1"],
            "phases": m.get("phases", []), "trainable_params": _trainable(clf.model_, clf.config.train.strategy)}


def _trainable(model: torch.nn.Module, strategy: str) -> int:
    """Parameters that the recipe's last phase trains: LoRA's adapters and the head, else all."""
    if strategy == "lora":
        return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or n.startswith("head."))
    return sum(p.numel() for p in model.parameters())


def run_trainer_lora(classes, train, val, args, folder: Path) -> dict:
    return run_trainer(classes, train, val, args, folder, lora=True)


def run_trainer(classes, train, val, args, folder: Path, lora: bool = False) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    path = hf_text.PACKAGED["minilm"].locate()
    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(classes))
    if lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["query", "key", "value"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def encode(rows):
        enc = tokenizer([t for _, t in rows], truncation=True, max_length=args.max_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": classes.index(label)}
                for ids, mask, (label, _) in zip(enc["input_ids"], enc["attention_mask"], rows)]

    training = TrainingArguments(
        output_dir=str(folder / "trainer"), num_train_epochs=args.trainer_epochs, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, learning_rate=5e-4 if lora else 5e-5, weight_decay=0.01, warmup_steps=0.1, seed=0,
        eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training, train_dataset=encode(train),
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    logits = torch.as_tensor(trainer.predict(encode(val)).predictions)
    wall = time.perf_counter() - started
    report = classification_report(logits, torch.tensor([classes.index(label) for label, _ in val]), classes)
    recipe = (f"peft LoRA (r 8 on query/key/value), {args.trainer_epochs} epoch(s), LR 5e-4" if lora
              else f"full fine-tuning, {args.trainer_epochs} epoch(s), LR 5e-5")
    return {"tool": "Trainer + peft" if lora else "transformers Trainer", "recipe": recipe,
            "wall_seconds": round(wall, 1), "macro_f1": report["macro_f1"], "accuracy": report["accuracy"],
            "minority_f1": report["per_class"][classes[-1]]["f1"], "trainable_params": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--train-size", type=int, default=None, help="stratified subsample of the training split")
    parser.add_argument("--epochs", type=int, default=None, help="headstart fine-tuning epochs (default: its recipe's)")
    parser.add_argument("--trainer-epochs", type=int, default=3, help="Trainer epochs (its usual 3)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="headstart config override, e.g. train.strategy=auto (repeatable)")
    parser.add_argument("--tools", default="headstart,trainer", help="which to run, comma-separated")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "text_classification.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classes, train, val = read_split(Path(args.data), args.train_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("headstart", run_headstart), ("trainer", run_trainer), ("trainer-lora", run_trainer_lora)):
            if name not in args.tools.split(","):
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            rows.append(fn(classes, train, val, args, folder))
            print(f"{rows[-1]['tool']:<22} macro-F1 {rows[-1]['macro_f1']:.4f}  {rows[-1]['wall_seconds']:8.1f} s",
                  flush=True)
    ratio = rows[1]["wall_seconds"] / rows[0]["wall_seconds"] if len(rows) == 2 else None
    table = Table(title=f"Text classification: {Path(args.data).name}, train {len(train)}, held-out val {len(val)}")
    for col in ("tool", "recipe", "wall s", "macro-F1", "accuracy", "F1 " + classes[-1], "trained params"):
        table.add_column(col, justify="left" if col in ("tool", "recipe") else "right")
    for r in rows:
        table.add_row(r["tool"], r["recipe"], f"{r['wall_seconds']:.1f}", f"{r['macro_f1']:.4f}", f"{r['accuracy']:.4f}",
                      f"{r['minority_f1']:.4f}", f"{r['trainable_params']:,}")
    Console().print(table)
    if ratio is not None:
        print(f"{rows[1]['tool']} wall time / {rows[0]['tool']} wall time: {ratio:.2f}; macro-F1 difference "
              f"({rows[0]['tool']} - {rows[1]['tool']}): {rows[0]['macro_f1'] - rows[1]['macro_f1']:+.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "data": args.data, "model": "minilm (all-MiniLM-L6-v2)", "train_size": len(train), "val_size": len(val),
        "epochs": args.epochs, "trainer_epochs": args.trainer_epochs, "max_length": args.max_length, "rows": rows,
        "time_ratio_trainer_over_headstart": ratio,
    }, indent=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
