"""The ``medattn`` command line: parse, call the library, print.

Each sub-command is registered by one ``_add_<name>`` function below and does its work through a
public library call, so everything here can also be done from a notebook.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from medattn import __version__
from medattn.errors import MedattnError

# ---------------------------------------------------------------------------------------------
# Sub-commands. Keep each one short: argument parsing plus one library call.
# ---------------------------------------------------------------------------------------------


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one sub-parser (keeps the list in file order)."""
    _REGISTRARS.append(fn)
    return fn


# --- commands start ---------------------------------------------------------------------------
@command
def _add_models(sub):
    p = sub.add_parser("models", help="list the model names of the zoo",
                       description="List every model name create_model/--model accepts (docs/models.md).")

    def run(args):
        from medattn.models import model_catalog

        for name, description in model_catalog():
            print(f"{name:24s} {description}")

    p.set_defaults(func=run)


@command
def _add_params(sub):
    p = sub.add_parser("params", help="Table 1: parameter counts of every model",
                       description="Count parameters of the real models: the paper's convention "
                       "(only weight/bias tensors), the full count, and the change relative to the "
                       "base model (docs/models.md).")
    p.add_argument("--format", dest="fmt", choices=["md", "csv", "json"], default="md")
    p.add_argument("--num-classes", type=int, default=3, help="classifier outputs (default 3, as the paper)")

    def run(args):
        from medattn.models.counting import parameter_table_text

        print(parameter_table_text(args.fmt, num_classes=args.num_classes), end="")

    p.set_defaults(func=run)


@command
def _add_compare(sub):
    p = sub.add_parser("compare", help="Table 2: every variant vs its base (Welch, CIs, g, TOST, Holm)",
                       description="Compare each model variant with the base of its backbone, "
                       "from a study's runs or from a summary CSV (docs/statistics.md).")
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--summary", metavar="FILE.csv",
                   help="summary CSV (dataset,backbone,model,set,mean,sd,n; percent) instead of "
                   "RUNS_DIR; 'paper' = the paper's Table 2")
    p.add_argument("--format", dest="fmt", choices=["md", "csv", "json", "latex"], default="md")
    p.add_argument("--out", metavar="FILE", help="also write the output to FILE")
    p.add_argument("--include-diverged", action="store_true",
                   help="include diverged final runs (excluded and listed by default)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--margin", type=float, default=1.0,
                   help="TOST equivalence margin in percentage points (default 1.0)")
    p.add_argument("--power", type=float, default=0.8,
                   help="power for the detectable difference (default 0.8)")
    p.add_argument("--correction", default="holm",
                   choices=["holm", "none", "bonferroni", "holm-sidak", "fdr_bh", "fdr_by"],
                   help="multiple-comparison correction within each column (default holm)")

    def run(args):
        from medattn.analysis.compare import run_compare

        print(run_compare(args.runs_dir, summary=args.summary, fmt=args.fmt, out=args.out,
                          include_diverged=args.include_diverged, alpha=args.alpha,
                          margin=args.margin, power=args.power, correction=args.correction),
              end="")

    p.set_defaults(func=run)


@command
def _add_report(sub):
    p = sub.add_parser("report", help="one self-contained HTML report (+ Markdown, CSV, LaTeX)",
                       description="Write RUNS_DIR/report/report.html (figures embedded, opens "
                       "offline), report.md and the tables as CSV and LaTeX (docs/report.md).")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUNS_DIR/report)")

    def run(args):
        from medattn.report import build_report

        print(build_report(args.runs_dir, out=args.out))

    p.set_defaults(func=run)


@command
def _add_explain(sub):
    p = sub.add_parser("explain", help="Table 4: Grad-CAM, GA attention maps and ViT rollout",
                       description="Explain the best run of each model per data set: one example "
                       "image per class and the mean map over N images, drawn as the Table 4 grid, "
                       "plus the share of map mass in the lesion mask, patch region and border "
                       "(RUNS_DIR/analysis/explain/; docs/explain.md).")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="study output folder")
    p.add_argument("--n-mean", type=int, default=500, help="images averaged for the mean map (default 500)")
    p.add_argument("--image-ids", nargs="+", metavar="ID", help="example images (one per class) "
                   "instead of the reproducible choice")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="models to include (default: "
                   "base, +ga, +ela, +ga+ela of both backbones and the ViTs, where trained)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="data sets to include (default all)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--border", type=float, default=0.1,
                   help="border/corner width as a fraction of the image side (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")

    def run(args):
        from medattn.explain import explain_runs

        out = explain_runs(args.runs_dir, n_mean=args.n_mean, image_ids=args.image_ids,
                           models=args.models, datasets=args.datasets, batch_size=args.batch_size,
                           border=args.border, seed=args.seed)
        for key in ("png", "pdf", "summary"):
            print(out[key])

    p.set_defaults(func=run)

# --- commands end -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medattn",
        description="Rigorous studies of self-attention in medical image classification.",
    )
    parser.add_argument("--version", action="version", version=f"medattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except MedattnError as err:
        print(f"medattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medattn {args.command}: interrupted; finished work is kept, run again to resume.",
              file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
