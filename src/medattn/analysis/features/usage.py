"""Table 3: which features the trained models use beyond what the diagnosis explains.

Feature F is *used* by a model when F is not independent of the model's prediction Y given the
ground truth Z (Reimers et al. 2020): each of cHSIC, RCoT and CMIknn tests ``F _||_ Y | Z`` on a
run's test-set predictions, and F counts as used when the majority of the tests reject at ``alpha``
after each test's p-values are Holm-adjusted over the features of the run.
Z is the fine diagnosis where the data has one (:mod:`.conditioning`), and the paper's 3-class
label beside it. Every final run is tested; :mod:`.summary` turns the runs into k of N, effect
sizes with CIs and paired differences between models.

Steps of :func:`feature_usage`: the settings check themselves (:class:`.settings.UsageSettings`);
:func:`.usage_plan.plan_usage` selects the runs and reads what an earlier call saved;
:func:`.usage_run.run_tests` resumes or tests each run; :func:`aggregate` makes the decisions,
summary, differences and Table 3; :func:`write_outputs` writes them.

Outputs in ``RUNS_DIR/analysis/features/``: ``features_<data>.csv`` (the per-image features, a
cache), ``pvalues.csv`` (one row per run, feature, condition and test; re-used on the next call
with the same settings, so an interrupted analysis resumes), ``decisions.csv`` (one row per run,
feature and condition), ``usage.csv`` (per model and feature over runs), ``differences.csv``
(variant vs base), ``table3.csv``, ``table3.md``, ``settings.json`` (the settings of these
tables), on a shared (OOD) test set ``jackknife.csv`` (the test-image term of the CMI CIs,
:mod:`.shared_test_usage`) and, on synthetic data, ``truth.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medattn.analysis.features.decisions import (  # noqa: F401 (feature_tests, ...: public API)
    decide,
    feature_tests,
    one_image_per_group,
    prediction_matrix,
)
from medattn.analysis.features.settings import UsageSettings, argument_error
from medattn.analysis.features.shared_test_usage import ImageTerms
from medattn.analysis.features.shared_usage_runs import image_terms
from medattn.analysis.features.summary import model_differences, usage_summary
from medattn.analysis.features.table3 import table3, table3_markdown
from medattn.analysis.features.usage_plan import UsagePlan, plan_usage, select_runs  # noqa: F401
from medattn.analysis.features.usage_run import (TestedRuns, load_data, merge_saved, run_tests,
                                                 write_csv)
from medattn.analysis.paired import comparison_ratio, run_info
from medattn.runs.atomic import write_text
from medattn.runs.store import iter_records

__all__ = ["UsageResult", "UsageSettings", "aggregate", "feature_usage",
           "select_runs", "write_outputs"]


@dataclass
class UsageResult:
    """What :func:`feature_usage` computed, with what settings, and the files it wrote."""

    settings: UsageSettings
    pvalues: pd.DataFrame  # one row per (run, condition, feature, test)
    decisions: pd.DataFrame  # one row per (run, condition, feature): counts, p, effects, used
    table: pd.DataFrame  # Table 3: one row per (model, condition), one column per feature
    markdown: str
    summary: pd.DataFrame  # per (condition, model, feature): k/N, median p, effects with CIs
    differences: pd.DataFrame  # variant vs base: paired differences of the effects
    notes: list[str] = field(default_factory=list)  # e.g. a fallback from diagnosis to label
    truths: dict = field(default_factory=dict)  # data spec -> planted truth (synthetic data)
    paths: dict[str, Path] = field(default_factory=dict)  # name -> written file


def feature_usage(runs_dir: str | os.PathLike, *, settings: UsageSettings | None = None,
                  jobs: int = 1, progress: bool = True, **changes) -> UsageResult:
    """Run the feature-usage analysis over a study directory and write Table 3.

    Args:
        runs_dir: a study directory (``runs/<id>/record.json`` + predictions).
        settings: what is tested and how (:class:`UsageSettings`; default: its defaults).
        jobs: worker processes for the tests (one feature of one run each); the p-values do not
            depend on it (every test has its own seed).
        progress: show progress bars.
        **changes: fields of :class:`UsageSettings` to change, e.g. ``alpha=0.05`` (a shorthand
            for ``settings=UsageSettings(alpha=0.05)``).

    Returns:
        :class:`UsageResult`, with the written files in ``paths``.

    Raises:
        ArgumentError: a setting out of range (a ConfigError naming the argument).
        DataError: the folder holds nothing to test.
    """
    settings = _with_changes(settings or UsageSettings(), changes)
    if isinstance(jobs, bool) or not isinstance(jobs, int | float) or jobs != int(jobs) \
            or jobs < 1:
        raise argument_error("jobs", f"jobs={jobs!r} must be a whole number >= 1")
    plan = plan_usage(runs_dir, settings)
    tested = run_tests(plan, settings, jobs=int(jobs), progress=progress)
    pvalues = pd.DataFrame(tested.rows)
    pvalues["alpha"] = settings.alpha  # resumed rows may have been saved at another alpha
    write_csv(plan.pvalues_path, merge_saved(plan.pvalues_path, pvalues.to_dict("records"),
                                             plan.key))
    decisions = decide(pvalues, settings.tests)
    image = shared_image_terms(plan, settings, tested, decisions, progress)
    result = aggregate(pvalues, decisions, plan, settings, tested, image)
    result.paths = write_outputs(result, plan)
    if image is not None:
        result.paths["jackknife"] = plan.out_dir / "jackknife.csv"
    return result


def shared_image_terms(plan: UsagePlan, settings: UsageSettings, tested: TestedRuns,
                       decisions: pd.DataFrame, progress: bool) -> ImageTerms | None:
    """On a shared (OOD) test set, the test-image sampling term of the CMI CIs (a jackknife over
    image blocks, stored in ``jackknife.csv`` so it resumes); None in-distribution."""
    data = tested.data

    def load(spec: str):
        if spec not in data:
            data[spec] = load_data(spec, plan.out_dir, settings.patches, progress)
        return data[spec]

    return image_terms(plan.runs_dir, plan.chosen, decisions, settings.set_name, key=plan.key,
                       load=load, prediction=settings.prediction, seed=settings.seed,
                       one_per_group=settings.one_per_group, test_options=settings.test_options,
                       min_per_diagnosis=int(settings.min_per_diagnosis), out_dir=plan.out_dir)


def _with_changes(settings: UsageSettings, changes: dict) -> UsageSettings:
    if not isinstance(settings, UsageSettings):
        raise TypeError(f"settings must be a UsageSettings, got {type(settings).__name__}")
    fields = {f.name for f in dataclasses.fields(UsageSettings)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise TypeError(f"feature_usage() got unknown argument(s) {', '.join(unknown)}; the "
                        f"settings are {', '.join(sorted(fields))}")
    return dataclasses.replace(settings, **changes) if changes else settings


def aggregate(pvalues: pd.DataFrame, decisions: pd.DataFrame, plan: UsagePlan,
              settings: UsageSettings, tested: TestedRuns,
              image: ImageTerms | None = None) -> UsageResult:
    """The summary over runs of the per-run ``decisions``, the differences between models,
    Table 3 and its Markdown (nothing written). ``image``: the test-image term on a shared set."""
    tests = settings.tests
    ratio = _split_ratio(plan.runs_dir, plan.chosen["run_id"])
    summary = usage_summary(decisions, tests, ratio, rate=settings.alpha, image=image)
    differences = model_differences(decisions, plan.chosen[["model", "backbone", "variant"]],
                                    tests, ratio, image=image)
    table = table3(decisions, settings.which_runs, settings.conditions, rate=settings.alpha)
    truths = _truths(plan, tested)
    notes = [*plan.notes, *tested.notes]
    markdown = table3_markdown(
        table, summary=summary, differences=differences, runs=settings.which_runs,
        select=settings.select_by, prediction=settings.prediction, alpha=settings.alpha,
        tests=tests, decisions=decisions, set_name=settings.set_name,
        one_per_group=settings.one_per_group, conditions=settings.conditions,
        min_per_diagnosis=settings.min_per_diagnosis, truths=truths, notes=notes)
    return UsageResult(settings=settings, pvalues=pvalues, decisions=decisions, table=table,
                       markdown=markdown, summary=summary, differences=differences, notes=notes,
                       truths=truths)


def write_outputs(result: UsageResult, plan: UsagePlan) -> dict[str, Path]:
    """Write the tables of ``result`` and its settings into ``plan.out_dir`` (each file
    atomically); returns name -> path, ``pvalues`` (written by the tests) included."""
    out = plan.out_dir
    paths = {"pvalues": plan.pvalues_path, "decisions": out / "decisions.csv",
             "usage": out / "usage.csv", "differences": out / "differences.csv",
             "table3_csv": out / "table3.csv", "table3_md": out / "table3.md",
             "settings": out / "settings.json"}
    write_csv(paths["decisions"], result.decisions)
    write_csv(paths["usage"], result.summary)
    write_csv(paths["differences"], result.differences)
    write_csv(paths["table3_csv"], result.table.reset_index())
    write_text(paths["table3_md"], result.markdown)
    record = {"settings": dataclasses.asdict(result.settings), "resume_key": plan.key,
              "runs": plan.chosen["run_id"].astype(str).tolist()}
    write_text(paths["settings"], json.dumps(record, indent=2) + "\n")
    if result.truths:
        paths["truth"] = out / "truth.json"
        write_text(paths["truth"], json.dumps(result.truths, indent=2) + "\n")
    return paths


def _truths(plan: UsagePlan, tested: TestedRuns) -> dict:
    """The planted truth of each synthetic data set tested, from the loaded data or, where every
    run was resumed and nothing was loaded, from the truth files."""
    truths = {spec: d.truth for spec, d in tested.data.items() if d.truth}
    if truths:
        return truths
    # start-up time: medattn.data imports torch, which the analysis of saved runs does not need
    from medattn.data.synthetic.derm import read_truth

    for spec in plan.chosen["data"].unique():
        truth = read_truth(Path(spec.split(":", 1)[-1]).expanduser())
        if truth:
            truths[spec] = truth
    return truths


def _split_ratio(runs_dir: Path, run_ids) -> float:
    """n_test / n_train of the runs' splits for the corrected CIs (0 on a fixed official split),
    as Table 2's paired tests take it (:func:`medattn.analysis.paired.comparison_ratio`)."""
    wanted = set(run_ids)
    info = run_info([r for r in iter_records(runs_dir) if r.get("run_id") in wanted])
    return comparison_ratio(info, None)[0]
