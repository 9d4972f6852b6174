"""The ``medattn`` command line: parse, call the library, print.

Each sub-command is registered by one ``_add_<name>`` function below and does its work through a
public library call, so everything here can also be done from a notebook.

Over 400 lines on purpose: one job (argument parsing) for a dozen commands, kept in one file in
``medattn --help`` order so that every flag and its help text can be read and checked together.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from medattn import __version__, progress
from medattn.analysis.settings import CORRECTIONS, TESTS, CompareSettings, PlanSettings, SequentialSettings
from medattn.errors import ArgumentError, ConfigError, IncompleteStudyError, MedattnError
from medattn.install_check import check_torch_install
from medattn.runs.hint import check_runs_dir

# Each command imports what it runs (the model zoo, training, analysis, report, explain: torch,
# timm, scipy, pandas, matplotlib; numpy for the error message of a failed file call) inside its
# function, so `medattn --help` and the parser stay fast. Only light modules are imported above.

# The flags' defaults are the settings' (declared once, in medattn.analysis.settings, which
# imports nothing heavy). explain's are written out below, as importing medattn.explain loads
# torch; a test checks that they agree with ExplainSettings.
CMP, PLAN, SEQ = CompareSettings(), PlanSettings(), SequentialSettings()

# ---------------------------------------------------------------------------------------------
# Sub-commands. Keep each one short: argument parsing plus one library call.
# ---------------------------------------------------------------------------------------------


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []
# medattn.data.READERS, named here so that building the parser does not import torch (a test
# checks the two agree)
SOURCES = ("isic", "isic2019", "isic2020", "ham10000", "medmnist", "pad-ufes-20", "camelyon17")


def command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one sub-parser (keeps the list in file order)."""
    _REGISTRARS.append(fn)
    return fn


# --- commands start ---------------------------------------------------------------------------
def _model_filters(p) -> None:
    p.add_argument("--backbone", nargs="+", metavar="NAME", dest="backbones",
                   help="only these backbones' models (e.g. resnet50 densenet121)")
    p.add_argument("--paper", action="store_true", help="only the paper's 14 models (Table 1)")


def _selected_models(args) -> list[str]:
    from medattn.models import list_models

    return list_models(args.backbones, paper_only=args.paper)


@command
def _add_models(sub):
    p = sub.add_parser("models", help="list the models of the zoo with their parameter counts",
                       description="List every model name create_model/--model accepts: each "
                       "registered backbone with each registered attention module, with its "
                       "parameter count (millions, the paper's counting) and a description "
                       "(docs/models.md).")
    _model_filters(p)
    p.add_argument("--names", action="store_true",
                   help="names and descriptions only (quick: builds no model)")
    p.add_argument("--num-classes", type=int, default=3, help="classifier outputs (default 3, as the paper)")

    def run(args):
        from medattn.models import describe_model
        from medattn.models.counting import parameter_table

        names = _selected_models(args)
        if args.names:
            for name in names:
                print(f"{name:28s} {describe_model(name)}")
            return
        for r in parameter_table(args.num_classes, names).itertuples():
            print(f"{r.model:28s} {r.params_paper_m:7.2f}M  {r.description}")

    p.set_defaults(func=run)


@command
def _add_params(sub):
    p = sub.add_parser("params", help="Table 1: parameter counts of every model",
                       description="Count parameters of the real models (every registered backbone "
                       "x attention variant, the paper's 14 first): the paper's convention "
                       "(only weight/bias tensors), the full count, and the change relative to the "
                       "base model (docs/models.md).")
    p.add_argument("--format", dest="fmt", choices=["md", "csv", "json"], default="md",
                   help="output format: a Markdown table (default), CSV or JSON")
    p.add_argument("--num-classes", type=int, default=3, help="classifier outputs (default 3, as the paper)")
    _model_filters(p)

    def run(args):
        from medattn.models.counting import parameter_table_text

        print(parameter_table_text(args.fmt, num_classes=args.num_classes, models=_selected_models(args)),
              end="")

    p.set_defaults(func=run)


@command
def _add_compare(sub):
    p = sub.add_parser("compare", help="Table 2: every variant vs its base (paired, corrected and "
                       "Bayesian tests, bootstrap, divergence; Welch as the paper)",
                       description="Compare each model variant with the base of its backbone, "
                       "from a study's runs or from a summary CSV (docs/statistics.md).")
    p.add_argument("runs_dir", nargs="*", metavar="RUNS_DIR",
                   help="study output folder(s); several are compared together (each with "
                   "different data sets)")
    p.add_argument("--summary", metavar="FILE.csv",
                   help="summary CSV (dataset,backbone,model,set,mean,sd,n; percent) instead of "
                   "RUNS_DIR; 'paper' = the paper's Table 2")
    p.add_argument("--format", dest="fmt", choices=["md", "csv", "json", "latex"], default="md",
                   help="output format: Markdown with every section (default), CSV or JSON of the "
                   "long table, or LaTeX tabulars")
    p.add_argument("--out", metavar="FILE", help="also write the output to FILE")
    _add_compare_settings(p)
    g = p.add_mutually_exclusive_group()  # default: across data sets when the runs hold >= 2
    g.add_argument("--across", dest="across", action="store_const", const="on", default="auto",
                   help="add the answer across data sets (hierarchical model, signed-rank, "
                   "Friedman); on by default when the runs hold >= 2 data sets")
    g.add_argument("--no-across", dest="across", action="store_const", const="off",
                   help="leave out the answer across data sets")

    def run(args):
        from medattn.report.table2 import run_compare
        if args.summary is None:  # a wrong folder: name the right one
            for d in args.runs_dir:
                check_runs_dir(d, "compare")
        result = run_compare(args.runs_dir or None, summary=args.summary, fmt=args.fmt,
                             out=args.out, settings=_compare_settings(args), across=args.across)
        print(result.text, end="")

    p.set_defaults(func=run)


@command
def _add_plan(sub):
    p = sub.add_parser("plan", help="plan a design that can decide, from a pilot's runs or "
                       "published sds (power, P(decided), runs, hours)",
                       description="From a pilot's final runs (or --summary), per comparison: "
                       "each candidate design's corrected-test power and probability that the "
                       "Bayesian test decides right at a true difference --delta, its runs and "
                       "hours, and the images that would reach --power; saved as "
                       "RUNS_DIR/plan.json (docs/statistics.md).")
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help="pilot (study) output folder")
    p.add_argument("--summary", metavar="FILE.csv",
                   help="plan from published numbers instead (compare's summary CSV; 'paper')")
    p.add_argument("--sd-diff", type=float, metavar="PP",
                   help="with --summary: sd of the paired differences (default: from the "
                   "two sds, models taken as uncorrelated)")
    p.add_argument("--test-train-ratio", type=float, default=0.2 / 0.7, metavar="R",
                   help="with --summary: n_test / n_train of the splits (default 0.2857)")
    p.add_argument("--n-test", type=float, metavar="N",
                   help="with --summary: test images per split")
    p.add_argument("--seconds-per-run", type=float, metavar="S",
                   help="with --summary: training time of one run, for the hours")
    p.add_argument("--delta", type=float, default=PLAN.delta, metavar="PP",
                   help=f"true difference to detect, pp; must exceed --margin (default "
                   f"{PLAN.delta:g})")
    p.add_argument("--margin", type=float, default=PLAN.margin, metavar="PP",
                   help=f"ROPE of the Bayesian test, pp (default {PLAN.margin:g}, as compare)")
    p.add_argument("--power", type=float, default=PLAN.power,
                   help=f"target probability of deciding right (default {PLAN.power:g})")
    p.add_argument("--threshold", type=float, default=PLAN.threshold,
                   help=f"posterior probability a decision needs (default {PLAN.threshold:g})")
    p.add_argument("--budget", type=float, metavar="HOURS",
                   help="recommend only designs within this many hours")

    def run(args):
        from medattn.analysis import plan as P
        from medattn.report.design import format_plan

        settings = PlanSettings(delta=args.delta, margin=args.margin, power=args.power,
                                threshold=args.threshold, budget=args.budget)
        if (args.runs_dir is None) == (args.summary is None):
            raise ConfigError("give either RUNS_DIR or --summary FILE.csv (exactly one).")
        if args.summary is not None:
            plan = P.plan_summary(args.summary, sd_diff=args.sd_diff, n_test=args.n_test,
                                  test_train_ratio=args.test_train_ratio,
                                  seconds_per_run=args.seconds_per_run, settings=settings)
            print(format_plan(plan), end="")
            return
        check_runs_dir(args.runs_dir, "plan")  # a wrong folder: name the right one
        plan = P.plan_runs(args.runs_dir, settings=settings)
        print(format_plan(plan, saved=str(plan.paths["plan"])), end="")

    p.set_defaults(func=run)


def _add_pretrained_options(p, default: str | None) -> None:
    what = "(default timm)" if default else "(default: the config's train.pretrained)"
    p.add_argument("--pretrained", metavar="PATH|timm", default=default,
                   help="start from a local weight file (a timm .safetensors, e.g. from "
                   f"huggingface.co/timm) or `timm` for timm's ImageNet weights {what}")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights")


def _add_tracking_option(p) -> None:
    p.add_argument("--tracking", metavar="URI",
                   help="also log finished runs to this MLflow tracking URI, e.g. "
                   "sqlite:///mlflow.db (default $MEDATTN_TRACKING_URI; needs medattn[mlflow])")


def _add_compare_settings(p, summary: bool = True) -> None:
    """The flags of :class:`medattn.analysis.settings.CompareSettings` (compare, report)."""
    p.add_argument("--include-diverged", action="store_true",
                   help="include diverged final runs (excluded and listed by default)")
    p.add_argument("--alpha", type=float, default=CMP.alpha,
                   help=f"significance level (default {CMP.alpha:g})")
    p.add_argument("--margin", type=float, default=CMP.margin,
                   help="equivalence margin (TOST) and Bayesian ROPE in percentage points "
                   f"(default {CMP.margin:g})")
    p.add_argument("--power", type=float, default=CMP.power,
                   help=f"power for the detectable difference (default {CMP.power:g})")
    p.add_argument("--correction", default=CMP.correction, choices=CORRECTIONS,
                   help=f"multiple-comparison correction within each column (default "
                   f"{CMP.correction})")
    default = "corrected for runs, welch for --summary" if summary else "corrected"
    p.add_argument("--test", choices=TESTS, default=CMP.test,
                   help=f"the test that marks Table 2 (default: {default}; docs/statistics.md)")
    p.add_argument("--bootstrap", type=int, default=CMP.bootstrap, metavar="N",
                   help="resamples of the paired bootstrap over splits and test images "
                   f"(default {CMP.bootstrap}; 0 = skip)")
    p.add_argument("--seed", type=int, default=CMP.seed,
                   help=f"seed of the bootstrap (default {CMP.seed})")
    p.add_argument("--test-train-ratio", type=float, default=CMP.test_train_ratio, metavar="R",
                   help="n_test / n_train of the splits for the corrected and Bayesian tests "
                   "(default: from the run records" + ("; a summary needs it for --test "
                   "corrected, e.g. 0.2857 for 70/10/20)" if summary else ")"))


def _compare_settings(args):
    """The CompareSettings of compare's and report's flags (the library checks them)."""
    return CompareSettings(alpha=args.alpha, margin=args.margin, power=args.power,
                           correction=args.correction, test=args.test,
                           test_train_ratio=args.test_train_ratio, bootstrap=args.bootstrap,
                           seed=args.seed, include_diverged=args.include_diverged)


@command
def _add_report(sub):
    p = sub.add_parser("report", help="one self-contained HTML report (+ Markdown, CSV, LaTeX)",
                       description="Write RUNS_DIR/report/report.html (figures embedded, opens "
                       "offline), report.md and the tables as CSV and LaTeX (docs/report.md).")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUNS_DIR/report)")
    _add_compare_settings(p, summary=False)

    def run(args):
        from medattn.report import build_report
        check_runs_dir(args.runs_dir, "report")  # a wrong folder: name the right one
        result = build_report(args.runs_dir, out=args.out, settings=_compare_settings(args))
        print(result.html)

    p.set_defaults(func=run)


@command
def _add_explain(sub):
    p = sub.add_parser("explain", help="Table 4: Grad-CAM, GA attention maps and ViT rollout",
                       description="Explain the best run of each model per data set: one example "
                       "image per class and the mean map over N images, drawn as the Table 4 grid, "
                       "plus the share of map mass in the lesion mask, patch region and border "
                       "(RUNS_DIR/analysis/explain/; docs/explain.md).")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--n-mean", type=int, default=500,
                   help="images averaged for the mean map (default 500)")
    p.add_argument("--image-ids", nargs="+", metavar="ID", help="example images (one per class) "
                   "instead of the reproducible choice")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="models to include (default: "
                   "base, +ga, +ela, +ga+ela of both backbones and the ViTs, where trained)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="data sets to include (default all)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--border", type=float, default=0.1,
                   help="border/corner width as a fraction of the image side (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")
    p.add_argument("--choose", choices=["split", "best"], default="split",
                   help="how the run explained per model is chosen: the runs of one common "
                   "split, so every model is shown the same test images (default), or each "
                   "model's best run")

    def run(args):
        from medattn.explain import explain_runs
        from medattn.explain.settings import ExplainSettings
        check_runs_dir(args.runs_dir, "explain")  # a wrong folder: name the right one
        settings = ExplainSettings(n_mean=args.n_mean, choose=args.choose,
                                   image_ids=args.image_ids, border=args.border, seed=args.seed)
        result = explain_runs(args.runs_dir, settings=settings, models=args.models,
                              datasets=args.datasets, batch_size=args.batch_size)
        for key in ("png", "pdf", "summary"):
            print(result.paths[key])

    p.set_defaults(func=run)

@command
def _add_train(sub):
    p = sub.add_parser("train", help="one training run: train, select on validation, evaluate",
                       description="Train one model on one split of a data set, keep the epoch with "
                       "the best validation balanced accuracy, evaluate it on the test set and every "
                       "OOD set, and store record, model and predictions under RUNS/runs/<run id>/ "
                       "(docs/training.md). Started again, it resumes after its last epoch.")
    p.add_argument("--model", required=True, help="model name, e.g. resnet18+ga (medattn params)")
    p.add_argument("--data", required=True, metavar="SOURCE:PATH", help="e.g. isic:data/isic")
    p.add_argument("--ood", action="append", default=[], metavar="SOURCE:PATH",
                   help="an out-of-distribution test set (repeatable)")
    p.add_argument("--runs", default="runs/train", metavar="DIR", help="run store (default runs/train)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="split (and training) seed (default 0)")
    p.add_argument("--split", choices=["random", "official"], default="random",
                   help="random: grouped 70/10/20 split drawn by --split-seed (default); official: "
                   "the data set's own train/val/test partition (MedMNIST), runs then differ only "
                   "by the seed")
    p.add_argument("--epochs", type=int, default=30, help="epoch budget (default 30)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule (default cosine)")
    _add_pretrained_options(p, default="timm")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="decode images every epoch instead of caching resized copies")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to the run")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--restart", action="store_true",
                   help="discard the run's resume state and train it from the first epoch "
                   "(a finished run is never retrained)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="mixed precision (default auto: bf16 on GPUs that have it, else fp16 with "
                   "gradient scaling; off on CPU)")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="NHWC memory format (default auto: on CUDA only)")
    _add_tracking_option(p)

    def run(args):
        from medattn.training import train

        rec = train(args.model, args.data, ood=args.ood, runs_dir=args.runs, lr=args.lr,
                    weight_decay=args.weight_decay, split_seed=args.split_seed, device=args.device,
                    epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                    schedule=args.schedule, pretrained=args.pretrained, num_workers=args.workers,
                    threads=args.threads, cache=args.cache, tensorboard=args.tensorboard,
                    split=args.split, restart=args.restart, amp=args.amp,
                    channels_last=args.channels_last, tracking=args.tracking)
        print(f"{rec['status']}: {rec['run_id']} (best epoch {rec.get('best_epoch')})")
        for name, m in (rec.get("metrics") or {}).items():
            print(f"  {name:<20} balanced accuracy {100 * m['balanced_accuracy']:.1f}%  (n={m['n']})")
        if rec.get("message"):
            print(f"  {rec['message']}")
        print(f"run stored in {args.runs}/runs/{rec['run_id']} (next: medattn report {args.runs})")
        return 0 if rec["status"] in ("done", "diverged") else 1

    p.set_defaults(func=run)


def _add_backend_options(p) -> None:
    """Where `medattn study` trains: this process (local) or a Ray cluster."""
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: one run after another in this process (default); ray: each run "
                   "a Ray task")
    p.add_argument("--address", help="Ray cluster to join (auto or host:port; default: start one)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="Ray: GPUs per run (default 1 if the cluster has GPUs, else 0)")
    p.add_argument("--device", help="local: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--jobs", type=int, default=1,
                   help="local: runs trained at once in worker processes (default 1)")
    p.add_argument("--retries", type=int, default=3,
                   help="Ray: times a run is retried when its worker dies (default 3)")
    p.add_argument("--connect-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="Ray: give up joining the --address cluster after this long (default 20)")


def _add_sequential_options(p) -> None:
    """`medattn study --until-decided` and its settings."""
    # medattn.sequential_study, docs/statistics.md "Stopping when decided"
    p.add_argument("--until-decided", action="store_true",
                   help="train the final phase in batches and stop each model once all its "
                   "comparisons are decided (error rates held under the repeated looks)")
    p.add_argument("--max-splits", type=int, metavar="N",
                   help="--until-decided: the most final splits per model (default the "
                   "config's final.splits)")
    p.add_argument("--batch", type=int, default=SEQ.batch, metavar="B",
                   help=f"--until-decided: final splits added per batch (default {SEQ.batch})")
    p.add_argument("--margin", type=float, default=SEQ.margin, metavar="PP",
                   help=f"--until-decided: the ROPE / equivalence margin in pp (default "
                   f"{SEQ.margin:g})")


def _run_sequential(args, config, opts):
    """`medattn study --until-decided`: run it and print where each model stopped."""
    from medattn.sequential_study import run_until_decided

    settings = SequentialSettings(batch=args.batch, max_splits=args.max_splits,
                                  margin=args.margin)
    res = run_until_decided(config, args.out, args.backend, settings=settings,
                            restart=args.restart, tracking=args.tracking, **opts)
    _print_study(res.study)
    print("stop when decided: where each model stopped and why")
    print(res.models.to_string(index=False))
    shown = res.comparisons[["key", "decision", "batch", "n", "diff", "rci_low", "rci_high"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"repeated CIs (rci_low, rci_high) hold over all looks; state in "
          f"{res.runs_dir}/sequential.json (next: medattn compare {res.runs_dir})")


def _print_study(res):
    from medattn.analysis.study_summary import format_study

    print(format_study(res))


@command
def _add_study(sub):
    p = sub.add_parser("study", help="the paper's protocol: HP search, then final runs",
                       description="Run a study config (YAML file, or a shipped one: demo, "
                       "paper_isic, paper_camelyon17, medmnist_plus): learning rate x weight decay "
                       "search on a few splits, the best setting per model, then the final runs. "
                       "Finished runs are skipped, so an interrupted study is completed by running "
                       "it again (docs/training.md).")
    p.add_argument("config", metavar="CONFIG", help="config file or shipped config name")
    p.add_argument("--out", metavar="RUNS_DIR", help="run store (default runs/<config name>)")
    p.add_argument("--data-root", metavar="DIR", help="folder relative data paths start from "
                   "(overrides the config's data_root)")
    _add_backend_options(p)
    p.add_argument("--restart", action="store_true",
                   help="discard the resume state of unfinished runs and train them from the "
                   "first epoch (finished runs are kept)")
    _add_pretrained_options(p, default=None)
    _add_tracking_option(p)
    _add_sequential_options(p)

    def run(args):
        from medattn.training import run_study
        from medattn.training.config import load_config

        overrides = None if args.pretrained is None else {"train": {"pretrained": args.pretrained}}
        config = load_config(args.config, data_root=args.data_root, overrides=overrides)
        opts = ({"address": args.address, "num_cpus": args.cpus_per_run,
                 "num_gpus": args.gpus_per_run, "max_retries": args.retries,
                 "connect_timeout": args.connect_timeout}
                if args.backend == "ray" else {"device": args.device, "jobs": args.jobs})
        if args.until_decided:
            return _run_sequential(args, config, opts)
        if (args.max_splits, args.batch, args.margin) != (SEQ.max_splits, SEQ.batch, SEQ.margin):
            raise ConfigError("--max-splits, --batch and --margin of `medattn study` apply only "
                              "with --until-decided; add it, or drop them.")
        try:
            res = run_study(config, args.out, args.backend, restart=args.restart,
                            tracking=args.tracking, **opts)
        except IncompleteStudyError as err:
            if err.result is not None:
                _print_study(err.result)
            raise
        _print_study(res)
        print(f"results in {res.runs_dir} (next: medattn compare {res.runs_dir})")

    p.set_defaults(func=run)


@command
def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole study on built-in synthetic data, in minutes",
                       description="Write the synthetic data sets, run a small but real study "
                       "(base, +GA, +ELA; several splits; in-distribution and OOD) and its "
                       "analysis, then print Table 2, where the results are and the next "
                       "commands (docs/training.md).")
    p.add_argument("--out", default="medattn-demo", metavar="DIR",
                   help="output folder (default ./medattn-demo); run again to resume")
    p.add_argument("--quick", action="store_true",
                   help="a tiny study through every step in about a minute, to check an "
                   "installation (its numbers mean nothing)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once (default: the CPU cores, at most 2)")
    _add_tracking_option(p)

    def run(args):
        from medattn.demo import run_demo

        run_demo(args.out, size="quick" if args.quick else "full", jobs=args.jobs,
                 tracking=args.tracking)

    p.set_defaults(func=run)


@command
def _add_synth(sub):
    p = sub.add_parser("synth", help="write a synthetic data set in a real on-disk layout",
                       description="Write synthetic images with known ground truth as the real "
                       "data sets are laid out on disk (docs/data.md).")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    d = kinds.add_parser("derm", help="skin lesions: OUT/isic (ISIC archive) + OUT/pad-ufes-20 (OOD)")
    d.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write isic/ and pad-ufes-20/ into")
    d.add_argument("--n", type=int, default=2000, help="ISIC-layout images (default 2000)")
    d.add_argument("--n-ood", type=int, default=500, help="PAD-UFES-20-layout images (default 500)")
    d.add_argument("--image-size", "--size", dest="image_size", type=int, default=128,
                   help="image side in pixels (default 128)")
    d.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    d.add_argument("--patch-bias", type=float, default=0.6,
                   help="0 = colourful patches independent of class, 1 = tied to nevus (default 0.6)")
    d.add_argument("--age-bias", type=float, default=0.8, help="0..1 (default 0.8)")
    d.add_argument("--skin-bias", type=float, default=0.8, help="0..1 (default 0.8)")
    d.add_argument("--metadata", choices=["new", "old"], default="new",
                   help="ISIC metadata generation: diagnosis_1..5 (new) or diagnosis (old)")
    d.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    d.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    h = kinds.add_parser("path", help="H&E patches: OUT/camelyon17_v1.0 (Camelyon17-WILDS)")
    h.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write camelyon17_v1.0/ into")
    h.add_argument("--n", type=int, default=3000, help="patches (default 3000)")
    h.add_argument("--image-size", "--size", dest="image_size", type=int, default=96,
                   help="patch side in pixels (default 96)")
    h.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    h.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    h.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    u = kinds.add_parser("suite", help="several small data sets of graded difficulty "
                         "(MedMNIST layout) and OUT/suite.yaml, a study over them")
    u.add_argument("--out", required=True, metavar="DIR", help="folder to write suite_*.npz into")
    u.add_argument("--datasets", type=int, default=3, help="data sets, 2..5 (default 3)")
    u.add_argument("--n", type=int, default=300, help="images per data set (default 300)")
    u.add_argument("--image-size", "--size", dest="image_size", type=int, default=28,
                   help="image side in pixels (default 28)")
    u.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    u.add_argument("--overwrite", action="store_true", help="replace existing suite files")

    def run(args):
        from medattn.data import synthetic

        if args.kind == "suite":
            specs = synthetic.write_suite(args.out, n_datasets=args.datasets, n=args.n,
                                          image_size=args.image_size, seed=args.seed, overwrite=args.overwrite)
            print("\n".join(specs) + f"\nstudy config: {args.out}/suite.yaml "
                  f"(next: medattn study {args.out}/suite.yaml)")
            return
        if args.kind == "derm":
            specs = synthetic.write_derm(
                args.out, n=args.n, n_ood=args.n_ood, seed=args.seed, image_size=args.image_size,
                patch_bias=args.patch_bias, age_bias=args.age_bias, skin_bias=args.skin_bias,
                metadata=args.metadata, overwrite=args.overwrite, progress=True, workers=args.workers)
        else:
            specs = (synthetic.write_path(args.out, n=args.n, seed=args.seed,
                                          image_size=args.image_size,
                                          overwrite=args.overwrite, progress=True,
                                          workers=args.workers),)
        print("\n".join(specs))

    p.set_defaults(func=run)


@command
def _add_data(sub):
    p = sub.add_parser("data", help="inspect a data set on disk",
                       description="Data set utilities (docs/data.md).")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = acts.add_parser("inspect", help="class counts, groups, missing values and problems",
                        description=f"Load SOURCE:PATH ({', '.join(SOURCES)}), decode every image, "
                        "and report what it holds and what is wrong. Exits 1 when no image is "
                        "usable.")
    i.add_argument("spec", metavar="SOURCE:PATH",
                   help="the data set, e.g. isic:~/data/isic or medmnist:dermamnist_224.npz")
    i.add_argument("--no-verify", action="store_true", help="do not decode every image (faster)")

    def run(args):
        from medattn.data.inspect import inspect_dataset

        result = inspect_dataset(args.spec, verify=not args.no_verify)
        print(result)
        return 0 if result.usable else 1

    p.set_defaults(func=run)


@command
def _add_features(sub):
    p = sub.add_parser("features", help="Table 3: feature usage by conditional-independence tests",
                       description="Test, for the ABCD and bias features, whether each model's "
                       "prediction depends on the feature given the fine diagnosis (and given the "
                       "3-class label, the paper's conditioning) with cHSIC, RCoT and CMIknn "
                       "(majority at --alpha after Holm's adjustment over the 8 features), "
                       "over every final run. Writes "
                       "RUNS_DIR/analysis/features/ (docs/features.md).")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--runs", choices=["all", "best"], default="all",
                   help="every final run: k/N, effect sizes and paired differences (default), or "
                   "the best run per model (the paper's table; see --select)")
    p.add_argument("--select", choices=["val", "test"], default="val",
                   help="with --runs best: choose the run by validation (default) or test balanced "
                   "accuracy")
    p.add_argument("--dataset", metavar="NAME", default=None,
                   help="the study's data set to analyse (its name in the config); needed when "
                   "the final runs on skin data come from more than one")
    p.add_argument("--condition", nargs="+", choices=["diagnosis", "label"],
                   default=["diagnosis", "label"], metavar="{diagnosis,label}",
                   help="what the tests condition on, the first one primary (default: diagnosis "
                   "label; data without diagnoses fall back to label, with a note)")
    p.add_argument("--min-per-diagnosis", type=int, default=1,
                   help="merge diagnoses with fewer tested images into their class's rest "
                   "stratum (default 1: never merge; merging can bring the coarse-label "
                   "confound back, docs/features.md)")
    p.add_argument("--cmiknn-k", type=float, default=None, metavar="K",
                   help="CMIknn neighbours: a count (e.g. 10) or a fraction of each class "
                   "(default 0.1)")
    p.add_argument("--prediction", choices=["softmax", "logits", "class"], default="softmax",
                   help="model output tested (default softmax)")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    p.add_argument("--set", dest="set_name", default="test", help="predictions analysed (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tests (default 0)")
    p.add_argument("--patches", choices=["auto", "detector", "annotation"], default="auto",
                   help="colourful-patch source: annotation where present (auto), or the detector")
    p.add_argument("--all-images", action="store_true",
                   help="test every image (default: one per patient/lesion, as the tests assume "
                   "independent samples)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for the tests (default 1; same p-values for any number)")

    def run(args):
        from medattn.analysis.features.usage import UsageSettings, feature_usage
        check_runs_dir(args.runs_dir, "features")  # a wrong folder: name the right one
        settings = UsageSettings(
            best_only=args.runs == "best", select_by=args.select, dataset=args.dataset,
            conditions=tuple(args.condition), min_per_diagnosis=args.min_per_diagnosis,
            prediction=args.prediction, alpha=args.alpha, set_name=args.set_name,
            seed=args.seed, patches=args.patches, one_per_group=not args.all_images,
            test_options={"cmiknn": {"k": args.cmiknn_k}} if args.cmiknn_k is not None
            else {})
        result = feature_usage(args.runs_dir, settings=settings, jobs=args.jobs)
        print(result.markdown, end="")
        print("\nwritten:")
        for name, path in result.paths.items():
            print(f"  {name + ':':<13} {path}")

    p.set_defaults(func=run)


# --- commands end -----------------------------------------------------------------------------


# The order `medattn --help` lists the commands in: the order a new user needs them.
WORKFLOW = ("demo", "data", "synth", "models", "params", "train", "plan", "study", "compare",
            "features", "explain", "report")


def _workflow_position(register: Callable) -> int:
    name = register.__name__.removeprefix("_add_")
    return WORKFLOW.index(name) if name in WORKFLOW else len(WORKFLOW)


def _leaves(parser: argparse.ArgumentParser):
    """The parsers that run something (commands without sub-commands of their own)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in action.choices.values():
            yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medattn",
        description="Rigorous studies of self-attention in medical image classification. "
        "New here? `medattn demo` runs everything on built-in synthetic data and says what to "
        "run next.",
    )
    parser.add_argument("--version", action="version", version=f"medattn {__version__}",
                        help="print medattn's version and exit")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or informational lines (results and errors still "
                        "print); every command takes it too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in sorted(_REGISTRARS, key=_workflow_position):
        register(sub)
    for leaf in _leaves(parser):
        if leaf is not parser:  # SUPPRESS: an absent flag keeps the top-level value
            leaf.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                              help="no progress bars or informational lines (results and errors "
                              "still print)")
            leaf.set_defaults(_parser=leaf)  # its flags name the library's arguments in errors
    return parser


# Library arguments a command spells otherwise than its flag's dest (by the command's prog).
ARGUMENT_FLAGS = {"medattn study": {"runs_dir": "--out", "max_retries": "--retries"},
                  "medattn synth suite": {"n_datasets": "--datasets"},
                  "medattn features": {"best_only": "--runs", "select_by": "--select",
                                       "conditions": "--condition", "set_name": "--set",
                                       "one_per_group": "--all-images",
                                       "test_options['cmiknn']['k']": "--cmiknn-k",
                                       "k": "--cmiknn-k"}}


def argument_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Library argument -> how the command's user gives it: the flag whose dest is the argument
    (``margin`` -> ``--margin``), a positional's metavar (``runs_dir`` -> ``RUNS_DIR``), or
    :data:`ARGUMENT_FLAGS`."""
    names: dict[str, str] = {}
    for a in parser._actions:
        if a.dest in ("help", argparse.SUPPRESS):
            continue
        if a.option_strings:
            shown = next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0])
        else:
            shown = a.metavar if isinstance(a.metavar, str) else a.dest.upper()
        names.setdefault(a.dest, shown)
    return {**names, **ARGUMENT_FLAGS.get(parser.prog, {})}


def _message(err: MedattnError, args: argparse.Namespace) -> str:
    """The error's message, the library's argument names as this command's flags."""
    parser = getattr(args, "_parser", None)
    if isinstance(err, ArgumentError) and parser is not None:
        return err.render(argument_flags(parser))
    return str(err)


# Commands that import torchvision (models, data transforms, training): checked at their start
TORCH_COMMANDS = ("models", "params", "report", "explain", "train", "study", "demo", "synth")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    was_quiet = os.environ.get(progress.QUIET_ENV)  # --quiet holds for this command only
    progress.setup_console(True if getattr(args, "quiet", False) else None)
    try:
        return _run(parser, args)
    finally:
        progress.set_quiet(was_quiet == "1")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        if args.command in TORCH_COMMANDS:  # a broken torch/torchvision pair: one message, the fix
            check_torch_install()
        result = args.func(args)
    except MedattnError as err:
        print(f"medattn {args.command}: error: {_message(err, args)}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a folder not writable, a full disk: the file and the fix, no traceback
        from medattn.runs.atomic import write_error

        where = err.filename if err.filename is not None else "a file"
        print(f"medattn {args.command}: error: {write_error(err, where, 'access')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medattn {args.command}: interrupted; finished work is kept, run again to resume.",
              file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
