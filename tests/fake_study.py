"""A fake study on disk (run records per docs/architecture.md), shared by the compare/report tests.

Values are drawn from known means so tests can check what the tables must show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ["melanoma", "nevus", "other"]
# (backbone, variant) -> true mean balanced accuracy (fraction) in-distribution
FAKE_MODELS = {
    ("resnet18", "base"): 0.74, ("resnet18", "ga"): 0.70, ("resnet18", "ela"): 0.735,
    ("efficientnet_b0", "base"): 0.75, ("efficientnet_b0", "ga"): 0.76,
    ("vit", "21k"): 0.75,
}
MODEL_NAMES = {"base": "", "ga": "+ga", "ela": "+ela"}
N_FINAL = 5
DIVERGED_RUN = "final-isic-resnet18+ga-s4"
FAILED_RUN = "final-isic-efficientnet_b0-s4"


def _name(backbone: str, variant: str) -> str:
    if backbone == "vit":
        return f"vit_tiny_in{variant}"
    return backbone + MODEL_NAMES[variant]


N_TEST = 120  # test images per split (40 per class), drawn from a pool of POOL ids
N_OOD = 120  # the OOD set: the same images in every run
POOL = 600
SPLIT = {"kind": "random", "fractions": [0.7, 0.1, 0.2], "n_train": 420, "n_val": 60,
         "n_test": N_TEST}


def _bacc(labels, pred) -> float:
    return float(np.mean([np.mean(pred[labels == k] == k) for k in np.unique(labels)]))


def _predictions(rng, image_ids, labels, p_correct):
    """A predictions table (docs/architecture.md) whose model is right with ``p_correct``."""
    right = rng.random(len(labels)) < p_correct
    pred = np.where(right, labels, (labels + 1) % 3)
    logits = rng.normal(0, 1, (len(labels), 3))
    logits[np.arange(len(labels)), pred] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame({"row": np.arange(len(labels)), "image_id": image_ids, "label": labels,
                       "pred": pred})
    for i, c in enumerate(CLASSES):
        df[f"prob_{c}"] = probs[:, i]
    for i, c in enumerate(CLASSES):
        df[f"logit_{c}"] = logits[:, i]
    return df


def split_images(seed: int) -> tuple[list[str], np.ndarray]:
    """The test images of split ``seed``: 40 per class from the pool (overlapping across seeds)."""
    r = np.random.default_rng(1000 + seed)
    ids = np.concatenate([r.choice(np.arange(k, POOL, 3), 40, replace=False) for k in range(3)])
    return [f"IMG_{i:04d}" for i in ids], ids % 3


OOD_IMAGES = ([f"PAD_{i:04d}" for i in range(N_OOD)], np.arange(N_OOD) % 3)


def _record(run_id, phase, backbone, variant, seed, lr, wd, bacc_test, bacc_ood, bacc_val,
            status="done", rng=None, epochs=4):
    rng = rng or np.random.default_rng(seed)
    history = []
    for e in range(1, epochs + 1):
        history.append({"epoch": e, "train_loss": 1.1 / e + 0.01 * rng.random(),
                        "val_loss": 1.2 / e + 0.05, "val_balanced_accuracy":
                        bacc_val - 0.1 / e, "lr": lr * (1 - (e - 1) / epochs), "seconds": 1.5})

    def cm(b):
        n = 40
        right = int(round(b * n))
        m = np.full((3, 3), 0)
        for i in range(3):
            m[i, i] = right
            m[i, (i + 1) % 3] = n - right
        return m.tolist()

    metrics = {"val": {"balanced_accuracy": bacc_val, "n": 60}}
    if bacc_test is not None:
        metrics["test"] = {"balanced_accuracy": bacc_test, "per_class_recall": [bacc_test] * 3,
                           "confusion_matrix": cm(bacc_test), "n": 120}
    if bacc_ood is not None:
        metrics["ood-pad-ufes-20"] = {"balanced_accuracy": bacc_ood,
                                      "per_class_recall": [bacc_ood] * 3,
                                      "confusion_matrix": cm(bacc_ood), "n": 120}
    return {
        "run_id": run_id, "status": status, "phase": phase, "model": _name(backbone, variant),
        "backbone": backbone, "variant": variant, "dataset": "isic", "data": "isic:/data/isic",
        "ood": {"pad-ufes-20": "pad-ufes-20:/data/pad"}, "classes": CLASSES, "split_seed": seed,
        "lr": lr, "weight_decay": wd, "batch_size": 32, "epochs": epochs, "image_size": 32,
        "history": history, "best_epoch": epochs, "metrics": metrics,
        "data_fingerprint": "abc123", "versions": {"medattn": "0.1.0", "torch": "2.14.1",
                                                   "timm": "1.0.31", "python": "3.11.7"},
        "timings": {"total_seconds": 6.0}, "config": {}, "message": "",
        "split": dict(SPLIT),
    }


def write_fake_study(root: Path, seed: int = 0) -> dict:
    """Write RUNS_DIR with search + final runs; return the per-run test values (percent).

    Final runs have per-image predictions (``predictions/test.csv``, ``ood-pad-ufes-20.csv``)
    from which their recorded balanced accuracies are computed; split s tests the same images
    for every model. ``values[(backbone, variant)]`` lists the included runs' ID values in split
    order, ``values[(backbone, variant, "ood")]`` the OOD ones, ``values[(backbone, variant,
    "seeds")]`` their split seeds.
    """
    rng = np.random.default_rng(seed)
    runs = root / "runs"
    values: dict[tuple[str, str], list[float]] = {}
    records = []
    predictions = {}
    for (bb, var), mu in FAKE_MODELS.items():
        name = _name(bb, var)
        for lr in (1e-3, 1e-2):
            for wd in (0.0, 1e-4):
                for s in (0, 1):
                    bv = mu - (0.05 if lr == 1e-2 else 0.0) - (0.02 if wd else 0.0) + 0.01 * s
                    records.append(_record(f"search-isic-{name}-lr{lr}-wd{wd}-s{s}", "search", bb,
                                           var, 100 + s, lr, wd, None, None, bv, rng=rng))
        for s in range(N_FINAL):
            run_id = f"final-isic-{name}-s{s}"
            ids, labels = split_images(s)
            p_test = float(np.clip(mu + rng.normal(0, 0.012), 0, 1))
            p_ood = float(np.clip(mu - 0.15 + rng.normal(0, 0.04), 0, 1))
            if run_id == DIVERGED_RUN:
                p_test = p_ood = 0.0  # predicts one wrong class: balanced accuracy 0
            test = _predictions(rng, ids, labels, p_test)
            ood = _predictions(rng, *OOD_IMAGES, p_ood)
            if run_id == DIVERGED_RUN:  # at chance: everything predicted as class 0
                test["pred"], ood["pred"] = 0, 0
            predictions[run_id] = {"test": test, "ood-pad-ufes-20": ood}
            b = _bacc(labels, test["pred"].to_numpy())
            o = _bacc(OOD_IMAGES[1], ood["pred"].to_numpy())
            status = "done"
            if run_id == DIVERGED_RUN:
                status = "diverged"
            if run_id == FAILED_RUN:
                records.append({**_record(run_id, "final", bb, var, s, 1e-3, 0.0, None, None, 0.5,
                                          rng=rng), "status": "failed", "metrics": {},
                                "message": "CUDA out of memory"})
                continue
            rec = _record(run_id, "final", bb, var, s, 1e-3, 0.0, b, o, mu, status=status, rng=rng)
            if status == "diverged":
                rec["message"] = "loss became NaN at epoch 2"
            else:
                values.setdefault((bb, var), []).append(100 * b)
                values.setdefault((bb, var, "ood"), []).append(100 * o)
                values.setdefault((bb, var, "seeds"), []).append(s)
            records.append(rec)
    for rec in records:
        d = runs / rec["run_id"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "record.json").write_text(json.dumps(rec), encoding="utf-8")
        for set_name, table in predictions.get(rec["run_id"], {}).items():
            (d / "predictions").mkdir(exist_ok=True)
            table.to_csv(d / "predictions" / f"{set_name}.csv", index=False)
    models = [_name(bb, var) for bb, var in FAKE_MODELS] + ["resnet18+la"]  # +LA never ran
    (root / "study.yaml").write_text(
        "name: fake\ndata_root: /data\ndatasets:\n  - name: isic\n    data: isic:/data/isic\n"
        "    ood: [pad-ufes-20:/data/pad]\nmodels:\n" + "".join(f"  - {m}\n" for m in models)
        + "search:\n  lr: [0.001, 0.01]\n  weight_decay: [0, 0.0001]\n  splits: 2\n"
        "  first_seed: 100\nfinal:\n  splits: 5\n  first_seed: 0\n", encoding="utf-8")
    (root / "selection.csv").write_text(
        "dataset,model,lr,weight_decay,mean_val_bacc,n_runs\n"
        + "".join(f"isic,{_name(bb, var)},0.001,0.0,{mu:.4f},2\n" for (bb, var), mu in FAKE_MODELS.items()),
        encoding="utf-8")
    return values
