"""``medattn demo``: the whole pipeline on built-in synthetic data, in minutes on a laptop.

:func:`run_demo` runs :data:`STEPS` in order, each a function of a :class:`DemoContext`:
write the synthetic data sets, run the demo study (``configs/demo.yaml``: ResNet-18 base, +GA and
+ELA; a learning-rate search, then final runs on 3 splits; in-distribution and OOD test sets), write
a summary table, then the analysis steps: feature usage (Table 3), explanations
(Table 4) and the report. To add a step, append a
``(name, function)`` pair to :data:`STEPS`. Every step skips what an earlier, interrupted demo
already finished, so running the demo again resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("medattn.demo")

# Synthetic data: small enough for minutes on 2 CPU cores, large enough to learn above chance.
N_IMAGES = 700  # ISIC-layout images (in-distribution pool: train/val/test 70/10/20)
N_OOD = 200  # PAD-UFES-20-layout images (the OOD test set)
IMAGE_SIZE = 64  # side of the written images; the study trains at the config's image_size
# A strong colourful-patch shortcut on nevi (generator default 0.6): from-scratch models on a few
# hundred images then learn clearly above chance within the time budget, and the feature-usage
# analysis has a known, strongly used bias feature to find.
PATCH_BIAS = 0.9


@dataclass
class DemoContext:
    out: Path
    progress: bool = True
    jobs: int = 1
    n_images: int = N_IMAGES
    n_ood: int = N_OOD
    overrides: dict | None = None  # study config keys replaced (tests use a tinier study)
    data_dir: Path = field(init=False)
    runs_dir: Path = field(init=False)
    specs: dict[str, str] = field(default_factory=dict)  # data set name -> source:PATH
    result: object | None = None  # medattn.training.StudyResult after the study step
    outputs: list[str] = field(default_factory=list)  # what the steps wrote, for the last message

    def __post_init__(self) -> None:
        self.data_dir = self.out / "data"
        self.runs_dir = self.out / "runs"


def make_data(ctx: DemoContext) -> None:
    """Write the synthetic skin-lesion sets (ISIC layout + PAD-UFES-20 layout as OOD)."""
    from medattn.data.synthetic import write_derm

    isic, pad = ctx.data_dir / "isic", ctx.data_dir / "pad-ufes-20"
    if (isic / "metadata.csv").is_file() and (pad / "metadata.csv").is_file():
        log.info("synthetic data already in %s", ctx.data_dir)
    else:
        write_derm(ctx.data_dir, n=ctx.n_images, n_ood=ctx.n_ood, seed=0, image_size=IMAGE_SIZE,
                   patch_bias=PATCH_BIAS, overwrite=True, progress=ctx.progress, workers=ctx.jobs)
    ctx.specs = {"isic": f"isic:{isic}", "pad-ufes-20": f"pad-ufes-20:{pad}"}
    ctx.outputs.append(f"data: {ctx.data_dir}")


def run_demo_study(ctx: DemoContext) -> None:
    """The demo study (``configs/demo.yaml``) on the synthetic data."""
    from medattn.training import run_study
    from medattn.training.backends import LocalBackend

    from medattn.training.config import load_config

    config = load_config("demo", data_root=str(ctx.data_dir), overrides=ctx.overrides)
    ctx.result = run_study(config, ctx.runs_dir, LocalBackend(progress=ctx.progress, jobs=ctx.jobs))
    ctx.outputs.append(f"runs: {ctx.runs_dir}/runs (one folder per run: record.json, "
                       "model.safetensors, predictions/)")


def write_summary(ctx: DemoContext) -> None:
    """Mean +- std balanced accuracy of the final runs per model and test set (summary.md/.csv)."""
    from medattn.training import store

    res = ctx.result
    order = {m: i for i, m in enumerate(res.selection["model"])}  # the config's model order
    summary = res.summary.sort_values("model", key=lambda c: c.map(order),
                                      kind="stable").reset_index(drop=True)
    store.atomic_write(ctx.out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    lines = ["| data set | model | set | balanced accuracy (%) | runs | diverged |",
             "|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.dataset} | {r.model} | {r.set} | {100 * r.mean:.1f} +- "
                     f"{100 * r.std:.1f} | {r.n} | {r.n_diverged} |")
    sel = res.selection
    lines += ["", "Selected hyper-parameters (search on the validation balanced accuracy):", "",
              "| data set | model | lr | weight decay | mean val bacc (%) |", "|---|---|---|---|---|"]
    lines += [f"| {r.dataset} | {r.model} | {r.lr:g} | {r.weight_decay:g} | "
              f"{100 * r.mean_val_bacc:.1f} |" for r in sel.itertuples()]
    text = "\n".join(lines) + "\n"
    store.write_text(ctx.out / "summary.md", text)
    print(text)
    ctx.outputs.append(f"summary: {ctx.out / 'summary.md'}")


def build_report_step(ctx: DemoContext) -> None:
    """The HTML report of the runs, when the report part is installed."""
    try:
        from medattn.report import build_report
    except ImportError:
        log.info("report part not available; skipping the report")
        return
    ctx.outputs.append(f"report: {build_report(ctx.runs_dir)}")


def explain_step(ctx: DemoContext) -> None:
    """Table 4: Grad-CAM / GA maps of the best final run per model (``medattn explain``)."""
    from medattn.explain import explain_runs

    out = explain_runs(ctx.runs_dir, n_mean=500, progress=ctx.progress)
    ctx.outputs.append(f"explanations: {out['png']} and {out['summary']}")


def features_step(ctx: DemoContext) -> None:
    """Table 3: which ABCD and bias features the best final run of each model uses."""
    from medattn.analysis.features.usage import feature_usage

    result = feature_usage(ctx.runs_dir, runs="best", progress=ctx.progress)
    print(result.markdown, end="")
    ctx.outputs.append(f"feature usage (Table 3): {result.paths['table3_md']}")


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("data", make_data),
    ("study", run_demo_study),
    ("summary", write_summary),
    ("features", features_step),
    ("explain", explain_step),
    ("report", build_report_step),
]


def run_demo(out_dir: str | os.PathLike = "medattn-demo", *, progress: bool = True,
             jobs: int | None = None, n_images: int = N_IMAGES, n_ood: int = N_OOD,
             overrides: dict | None = None) -> Path:
    """Run every step of :data:`STEPS` into ``out_dir``; returns ``out_dir`` (absolute).

    ``jobs``: runs trained at once (default: the CPU cores available, at most 2);
    ``n_images``/``n_ood``: size of the synthetic sets; ``overrides``: demo study config keys to
    replace. Timings of the steps are written to ``out_dir/timings.json``.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = DemoContext(out=out, progress=progress, jobs=jobs or max(1, min(2, cores or 1)),
                      n_images=n_images, n_ood=n_ood, overrides=overrides)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for i, (name, step) in enumerate(STEPS, 1):
        log.info("demo step %d/%d: %s", i, len(STEPS), name)
        t0 = time.perf_counter()
        step(ctx)
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("demo step %s done in %.0f s", name, timings[name])
    timings["total"] = round(time.perf_counter() - t_all, 1)
    from medattn.training import store
    store.write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    print(f"\nmedattn demo finished in {timings['total']:.0f} s. Results:")
    for line in ctx.outputs:
        print(f"  {line}")
    return out
