"""A fake study on disk (run records per docs/architecture.md), shared by the compare/report tests.

Values are drawn from known means so tests can check what the tables must show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
    }


def write_fake_study(root: Path, seed: int = 0) -> dict:
    """Write RUNS_DIR with search + final runs; return the per-run test values (percent)."""
    rng = np.random.default_rng(seed)
    runs = root / "runs"
    values: dict[tuple[str, str], list[float]] = {}
    records = []
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
            b = float(np.clip(mu + rng.normal(0, 0.012), 0, 1))
            o = float(np.clip(mu - 0.15 + rng.normal(0, 0.04), 0, 1))
            status = "done"
            if run_id == DIVERGED_RUN:
                status, b, o = "diverged", 1 / 3, 1 / 3
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
            records.append(rec)
    for rec in records:
        d = runs / rec["run_id"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "record.json").write_text(json.dumps(rec), encoding="utf-8")
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
