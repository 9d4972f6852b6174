"""``medattn demo``: the whole pipeline on built-in synthetic data, in minutes on a laptop.

:func:`run_demo` runs :data:`STEPS` in order, each a function of a :class:`DemoContext`:
write the synthetic data sets, run the demo study (``configs/demo.yaml``: ResNet-18 base, +GA and
+ELA; a learning-rate search, then a 5-fold cross-validation; in-distribution and OOD test sets),
write a summary table, Table 2's statistics, ``medattn plan`` on the final runs (what the design
can decide), then the analysis steps: feature usage (Table 3), explanations (Table 4) and the
report. It ends with a hand-over: Table 2 as a compact terminal
table, where the results are and the next commands, each path printed as those commands accept
it. To add a step, append a ``(name, function)`` pair to :data:`STEPS`. Every step skips what an
earlier, interrupted demo already finished, so running the demo again resumes it.

Two sizes (:data:`SIZES`): ``full`` (the default, about 6 minutes on 2 idle CPU cores) and
``quick`` (every step on a tiny study in about a minute: checks an installation end to end; its
numbers mean nothing).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medattn.analysis.compare import compare_runs
from medattn.analysis.design import design_for
from medattn.analysis.features.usage import feature_usage
from medattn.analysis.plan import Plan, plan_runs
from medattn.analysis.settings import PlanSettings
from medattn.analysis.study_summary import final_summary
from medattn.data.synthetic import write_derm
from medattn.errors import ConfigError, DataError
from medattn.explain import explain_runs
from medattn.explain.settings import ExplainSettings
from medattn.render import markdown_table
from medattn.report import build_report
from medattn.report.design import plan_brief
from medattn.report.table2 import terminal_table
from medattn.report.verdict import verdict_text
from medattn.runs import store
from medattn.training import run_study
from medattn.training.backends import LocalBackend
from medattn.training.config import StudyConfig, load_config
from medattn.training.study import selection_note

log = logging.getLogger("medattn.demo")

# Synthetic data: small enough for minutes on 2 CPU cores, large enough to learn above chance.
N_IMAGES = 700  # ISIC-layout images (in-distribution pool: train/val/test 70/10/20)
N_OOD = 200  # PAD-UFES-20-layout images (the OOD test set)
IMAGE_SIZE = 64  # side of the written images; the study trains at the config's image_size
# A strong colourful-patch shortcut on nevi (generator default 0.6): from-scratch models on a few
# hundred images then learn clearly above chance within the time budget, and the feature-usage
# analysis has a known, strongly used bias feature to find.
PATCH_BIAS = 0.9
# `medattn plan` on the demo's own final runs (docs/statistics.md, "The demo's design"): margin and
# threshold are compare's defaults; 10 pp is the difference the demo's design was planned for (a
# large one: a demo of 700 images can only look for large effects). No budget: the plan says what
# deciding would cost, however far beyond the demo's minutes that is.
PLAN_SETTINGS = PlanSettings(delta=10.0, margin=1.0, threshold=0.95)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: synthetic images, OOD images, demo-config keys replaced, and images
    averaged per explanation map."""

    n_images: int
    n_ood: int
    overrides: dict | None = None
    n_mean: int = 500


SIZES = {
    "full": DemoSize(N_IMAGES, N_OOD),
    # 8 two-epoch runs at 32 px on 300 images: every step, every output, in about a minute or
    # two. Fewer images or one epoch left runs at chance level ("diverged", 3 of 8 at 120 images
    # and one epoch), which reads as a broken installation.
    "quick": DemoSize(300, 30, {"models": ["resnet18", "resnet18+ga"],
                                "search": {"lr": [0.05, 0.02], "weight_decay": [0.0001],
                                           "splits": 1},
                                "final": {"splits": 2},
                                "train": {"epochs": 2, "image_size": 32, "batch_size": 16}},
                      n_mean=50),
}


@dataclass
class DemoContext:
    out: Path
    progress: bool = True
    jobs: int = 1
    n_images: int = N_IMAGES
    n_ood: int = N_OOD
    overrides: dict | None = None  # study config keys replaced (the quick size, tests)
    n_mean: int = 500  # images averaged per explanation map
    tracking: str | None = None  # MLflow tracking URI (None: $MEDATTN_TRACKING_URI or none)
    data_dir: Path = field(init=False)
    runs_dir: Path = field(init=False)
    specs: dict[str, str] = field(default_factory=dict)  # data set name -> source:PATH
    result: object | None = None  # medattn.training.StudyResult after the study step
    summary: pd.DataFrame | None = None  # its analysis.study_summary.final_summary
    table2: object | None = None  # medattn.analysis.compare.CompareResult after its step
    config: StudyConfig | None = None  # the demo study's config, after the study step
    plan: Plan | None = None  # `medattn plan` on the final runs, after its step
    plan_error: str | None = None  # why no plan could be made
    files: dict[str, Path] = field(default_factory=dict)  # what the steps wrote, to open

    def __post_init__(self) -> None:
        self.data_dir = self.out / "data"
        self.runs_dir = self.out / "runs"


def make_data(ctx: DemoContext) -> None:
    """Write the synthetic skin-lesion sets (ISIC layout + PAD-UFES-20 layout as OOD)."""
    isic, pad = ctx.data_dir / "isic", ctx.data_dir / "pad-ufes-20"
    if (isic / "metadata.csv").is_file() and (pad / "metadata.csv").is_file():
        log.info("synthetic data already in %s", ctx.data_dir)
    else:
        write_derm(ctx.data_dir, n=ctx.n_images, n_ood=ctx.n_ood, seed=0, image_size=IMAGE_SIZE,
                   patch_bias=PATCH_BIAS, overwrite=True, progress=ctx.progress, workers=ctx.jobs)
    ctx.specs = {"isic": f"isic:{isic}", "pad-ufes-20": f"pad-ufes-20:{pad}"}


def run_demo_study(ctx: DemoContext) -> None:
    """The demo study (``configs/demo.yaml``) on the synthetic data."""
    config = ctx.config = load_config("demo", data_root=str(ctx.data_dir), overrides=ctx.overrides)
    ctx.result = run_study(config, ctx.runs_dir, LocalBackend(progress=ctx.progress, jobs=ctx.jobs),
                           tracking=ctx.tracking)
    ctx.summary = final_summary(store.final_runs(ctx.runs_dir))


def write_summary(ctx: DemoContext) -> None:
    """Mean +- std balanced accuracy of the final runs per model and test set (summary.md/.csv)."""
    res = ctx.result
    if res is None or ctx.summary is None:
        raise RuntimeError("write_summary runs after run_demo_study (STEPS order)")
    order = {m: i for i, m in enumerate(res.selection["model"])}  # the config's model order
    summary = ctx.summary.sort_values("model", key=lambda c: c.map(order),
                                      kind="stable").reset_index(drop=True)
    store.atomic_write(ctx.out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    accuracy = pd.DataFrame({
        "data set": summary["dataset"], "model": summary["model"], "set": summary["set"],
        "balanced accuracy (%)": [f"{m:.1f} +- {s:.1f}"
                                  for m, s in zip(summary["mean_pct"], summary["sd_pct"])],
        "runs": summary["n"], "diverged": summary["n_diverged"]})
    sel = res.selection
    chosen = pd.DataFrame({
        "data set": sel["dataset"], "model": sel["model"], "lr": [f"{v:g}" for v in sel["lr"]],
        "weight decay": [f"{v:g}" for v in sel["weight_decay"]],
        "chosen by": [selection_note(*r) for r in zip(sel["source"], sel["mean_val_bacc"],
                                                      sel["n_runs"])]})
    text = "\n".join([markdown_table(accuracy), "", "Selected hyper-parameters (search on the "
                      "validation balanced accuracy):", "", markdown_table(chosen)]) + "\n"
    store.write_text(ctx.out / "summary.md", text)
    print(text)
    ctx.files["summary"] = ctx.out / "summary.md"


def table2_step(ctx: DemoContext) -> None:
    """Table 2's statistics (``medattn compare``'s defaults), kept for the hand-over."""
    ctx.table2 = compare_runs(ctx.runs_dir)


def plan_step(ctx: DemoContext) -> None:
    """``medattn plan`` on the final runs as a pilot: what the demo's design can decide, and what
    a design that decides would take (``runs/plan.json``, the report's "Design" section)."""
    try:
        ctx.plan = plan_runs(ctx.runs_dir, settings=PLAN_SETTINGS)
    except DataError as exc:  # e.g. every run of a model diverged: say so in the hand-over
        ctx.plan_error = str(exc)
        log.warning("no design plan: %s", exc)
        return
    ctx.files["plan"] = ctx.plan.paths["plan"]


def design_lines(ctx: DemoContext) -> list[str]:
    """The hand-over's design check: per comparison, what the configured design decides at
    :data:`PLAN_SETTINGS` and what the plan recommends."""
    if ctx.plan_error:
        return [f"Design check: no plan ({ctx.plan_error})"]
    if ctx.plan is None or ctx.config is None:
        return []
    cfg = ctx.config
    return plan_brief(ctx.plan, design_for(cfg.final_scheme, cfg.final_splits, cfg.final_folds))


def features_step(ctx: DemoContext) -> None:
    """Table 3: which ABCD and bias features the final runs of each model use (k of N runs,
    effect sizes, given the fine diagnosis and given the label)."""
    result = feature_usage(ctx.runs_dir, progress=ctx.progress, jobs=ctx.jobs)
    print(result.markdown, end="")
    ctx.files["Table 3"] = result.paths["table3_md"]


def explain_step(ctx: DemoContext) -> None:
    """Table 4: Grad-CAM / GA maps of the best final run per model (``medattn explain``)."""
    out = explain_runs(ctx.runs_dir, settings=ExplainSettings(n_mean=ctx.n_mean),
                       progress=ctx.progress)
    ctx.files["Table 4"] = out.paths["png"]


def build_report_step(ctx: DemoContext) -> None:
    """The self-contained HTML report of the runs (Tables 1-4)."""
    ctx.files["report"] = build_report(ctx.runs_dir).html


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("data", make_data),
    ("study", run_demo_study),
    ("summary", write_summary),
    ("table2", table2_step),
    ("plan", plan_step),
    ("features", features_step),
    ("explain", explain_step),
    ("report", build_report_step),
]


def shown(path: str | os.PathLike) -> str:
    """A path as printed for the user: relative to the working directory when inside it (as typed
    after ``--out``), else absolute; quoted for the shell where needed."""
    p = Path(path).resolve()
    try:
        text = str(p.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        text = str(p)
    return shlex.quote(text)


def next_commands(ctx: DemoContext) -> list[tuple[str, str]]:
    """``(command, what it does)``: what to run next, with the demo's own paths."""
    runs = shown(ctx.runs_dir)
    cmds = [(f"medattn compare {runs}", "Table 2 in full: every test, bootstrap CIs")]
    if "report" in ctx.files:
        cmds.append((f"medattn report {runs}", "rebuild the HTML report"))
    cmds.append((f"medattn plan {runs} --delta {PLAN_SETTINGS.delta:g}",
                 "the design plan in full: every candidate design"))
    cmds += [(f"medattn features {runs}", "Table 3 (reuses finished tests)"),
             (f"medattn explain {runs}", "Table 4")]
    if "isic" in ctx.specs:
        source, _, path = ctx.specs["isic"].partition(":")
        cmds.append((f"medattn data inspect {source}:{shown(path)}", "check a data set"))
    # the study as it ran (the quick size's overrides included), from its resolved config
    cmds.append((f"medattn study {shown(ctx.runs_dir / 'study.yaml')} --out {runs}",
                 "the study (skips finished runs)"))
    return cmds


def handover(ctx: DemoContext, seconds: float) -> str:
    """The demo's last words: Table 2 in brief, the files to open, the commands to run next."""
    lines = []
    if ctx.table2 is not None:  # the answer first
        verdict = verdict_text(ctx.table2)
        lines += [verdict, ""] if verdict else []
    lines.append(f"medattn demo finished in {seconds:.0f} s; step timings in "
                 f"{shown(ctx.out / 'timings.json')}")
    if ctx.table2 is not None:
        lines += ["", terminal_table(ctx.table2)]
    design = design_lines(ctx)
    lines += ["", *design] if design else []
    if ctx.files:
        lines += ["", "Results:"]
        width = max(len(k) for k in ctx.files) + 1
        lines += [f"  {k + ':':<{width}} {shown(v)}" for k, v in ctx.files.items()]
        if "report" in ctx.files:
            lines.append(f"  (open {shown(ctx.files['report'])} in a browser; it works offline)")
    cmds = next_commands(ctx)
    width = min(48, max(len(c) for c, _ in cmds))
    lines += ["", "Next:"] + [f"  {c:<{width}}  # {what}" for c, what in cmds]
    return "\n".join(lines)


def run_demo(out_dir: str | os.PathLike = "medattn-demo", *, size: str = "full",
             progress: bool = True, jobs: int | None = None, n_images: int | None = None,
             n_ood: int | None = None, overrides: dict | None = None,
             tracking: str | None = None) -> Path:
    """Run every step of :data:`STEPS` into ``out_dir`` and print the hand-over.

    Args:
        out_dir: where the data, the runs and the report go.
        size: a key of :data:`SIZES` (``full``, ``quick``).
        progress: show progress bars.
        jobs: runs trained at once (default: the CPU cores available, at most 2).
        n_images: synthetic ISIC-layout images, instead of the size's.
        n_ood: synthetic PAD-UFES-20-layout images, instead of the size's.
        overrides: demo study config keys replaced, instead of the size's.
        tracking: an MLflow tracking URI for the study's runs.

    Returns:
        ``out_dir``, absolute. Timings of the steps are written to ``out_dir/timings.json``.
    """
    if size not in SIZES:
        raise ConfigError(f"demo size {size!r} is unknown; use one of {', '.join(SIZES)}.")
    preset = SIZES[size]
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = DemoContext(out=out, progress=progress, jobs=jobs or max(1, min(2, cores or 1)),
                      n_images=n_images or preset.n_images, n_ood=n_ood or preset.n_ood,
                      overrides=overrides if overrides is not None else preset.overrides,
                      n_mean=preset.n_mean, tracking=tracking)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for i, (name, step) in enumerate(STEPS, 1):
        log.info("demo step %d/%d: %s", i, len(STEPS), name)
        t0 = time.perf_counter()
        step(ctx)
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("demo step %s done in %.0f s", name, timings[name])
    timings["total"] = round(time.perf_counter() - t_all, 1)
    store.write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    print("\n" + handover(ctx, timings["total"]))
    return out
