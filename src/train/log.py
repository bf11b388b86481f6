"""The training log, ``log.csv``: one row per epoch (epoch 0: the kNN monitor at initialisation)."""

import csv
import json
import os

LOG_NAME = "log.csv"
LOG_FIELDS = ("epoch", "lr", "loss", "knn_top1", "seconds")
EVAL_NAME = "eval_{}.json"  # infer.py's result of a protocol, beside the checkpoint


def restart_log(path: str, start_epoch: int) -> None:
    """Keeps the rows of finished epochs (those before ``start_epoch``) only."""
    rows = _rows(path) if start_epoch > 0 and os.path.isfile(path) else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(row for row in rows if int(row["epoch"]) < start_epoch)


def append_log(path: str, **row) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, LOG_FIELDS).writerow(row)


def _rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_log(path: str) -> list[dict]:
    """The rows of a ``log.csv``; ValueError if it is missing or lacks the columns."""
    if not os.path.isfile(path):
        raise ValueError(f"training log not found: {path} (main.py writes it)")
    rows = _rows(path)
    if not rows or set(LOG_FIELDS) - set(rows[0]):
        raise ValueError(f"{path} has no rows with the columns {', '.join(LOG_FIELDS)}")
    return rows


def read_curves(results_dir: str) -> tuple[list, list]:
    """``(epoch, loss)`` and ``(epoch, kNN top-1)`` pairs of a run; infer.py's kNN of an epoch
    without a monitor value (``eval_knn.json`` beside the log) is added."""
    rows = read_log(os.path.join(results_dir, LOG_NAME))
    loss = [(int(r["epoch"]), float(r["loss"])) for r in rows if r["loss"]]
    knn = [(int(r["epoch"]), float(r["knn_top1"])) for r in rows if r["knn_top1"]]
    evaluated = os.path.join(results_dir, EVAL_NAME.format("knn"))
    if os.path.isfile(evaluated):
        with open(evaluated) as f:
            result = json.load(f)
        if result.get("epoch") not in {epoch for epoch, _ in knn}:
            knn = sorted([*knn, (int(result["epoch"]), float(result["knn_top1"]))])
    return loss, knn
