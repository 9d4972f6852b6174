"""Settings declared once: checked where they are built, naming the library's argument; recorded
in the outputs as they were used; the CLI names its flags for the same errors; one comparison
label everywhere."""

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from medattn import cli
from medattn.analysis import compare, plan
from medattn.analysis.labels import comparison_label
from medattn.analysis.settings import CompareSettings, PlanSettings, SequentialSettings
from medattn.errors import ArgumentError, ConfigError
from medattn.explain.settings import ExplainSettings

from tests.fake_study import write_fake_study

SRC = Path(__file__).resolve().parents[1] / "src" / "medattn"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_study(root)
    return root


@pytest.mark.parametrize("build,argument", [
    (lambda: CompareSettings(margin=-1), "margin"),
    (lambda: CompareSettings(alpha=1.5), "alpha"),
    (lambda: CompareSettings(power=0), "power"),
    (lambda: CompareSettings(correction="tukey"), "correction"),
    (lambda: CompareSettings(test="ttest"), "test"),
    (lambda: CompareSettings(test_train_ratio=float("nan")), "test_train_ratio"),
    (lambda: CompareSettings(bootstrap=-1), "bootstrap"),
    (lambda: CompareSettings(bootstrap=2.5), "bootstrap"),
    (lambda: CompareSettings(margin="wide"), "margin"),
    (lambda: PlanSettings(delta=1.0, margin=1.0), "delta"),
    (lambda: PlanSettings(threshold=0.4), "threshold"),
    (lambda: PlanSettings(budget=0), "budget"),
    (lambda: SequentialSettings(batch=0), "batch"),
    (lambda: SequentialSettings(max_splits=0), "max_splits"),
    (lambda: ExplainSettings(choose="worst"), "choose"),
    (lambda: ExplainSettings(n_mean=0), "n_mean"),
    (lambda: ExplainSettings(border=0.7), "border"),
])
def test_a_bad_setting_is_refused_where_it_is_built_naming_the_argument(build, argument):
    with pytest.raises(ArgumentError) as err:
        build()
    assert str(err.value).startswith(argument + " ") and argument in err.value.arguments
    assert "--" not in str(err.value)  # a notebook user never typed a flag
    assert isinstance(err.value, ConfigError)  # what callers caught before


def test_settings_are_frozen_and_their_defaults_are_declared_once():
    s = CompareSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.margin = 2.0
    assert (s.alpha, s.margin, s.power, s.correction, s.bootstrap) == (0.05, 1.0, 0.8, "holm",
                                                                       10_000)
    assert s.for_source(summary=True).test == "welch"
    assert s.for_source(summary=False).test == "corrected"
    assert CompareSettings(test="paired").for_source(summary=True).test == "paired"
    again = CompareSettings.from_dict({**CompareSettings(margin=0.5).as_dict(),
                                       "design": "sequential"})
    assert again == CompareSettings(margin=0.5)
    assert ExplainSettings(image_ids=["a", "b"]).image_ids == ("a", "b")  # hashable, frozen


@pytest.mark.slow
def test_the_entry_points_record_the_settings_they_used(fake, tmp_path):
    from medattn.report import build_report

    s = CompareSettings(margin=0.5, bootstrap=0, alpha=0.1)
    res = compare.compare_runs(fake, settings=s)
    assert res.settings == {**dataclasses.asdict(s), "test": "corrected"}
    assert res.paths == {}  # compare_runs writes nothing
    rep = build_report(fake, out=tmp_path / "r", settings=s, parameters=False)
    assert rep.html == tmp_path / "r" / "report.html" and rep.html.is_file()
    assert json.loads(rep.paths["settings"].read_text()) == res.settings == rep.settings
    assert rep.compare is not None and rep.compare.settings == res.settings
    for name in ("md", "table2_csv", "table2_md", "table2_tex", "runs", "pairs"):
        assert rep.paths[name].is_file() and rep.paths[name].parent == tmp_path / "r", name
    assert "margin=0.5" in rep.html.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_plan_records_its_settings_and_its_file(fake):
    p = plan.plan_runs(fake, settings=PlanSettings(delta=-3.0, margin=0.5))
    assert p.paths == {"plan": fake / plan.PLAN_FILE}
    saved = json.loads(p.paths["plan"].read_text())["settings"]
    assert {k: saved[k] for k in ("delta", "margin", "power", "threshold", "alpha")} == \
        {"delta": 3.0, "margin": 0.5, "power": 0.8, "threshold": 0.95, "alpha": 0.05}
    # the plan's comparisons carry the label compare's notes use
    table = compare.compare_runs(fake, settings=CompareSettings(bootstrap=0)).table
    labels = {comparison_label(r) for r in table[table["reference"].notna()].itertuples()}
    assert {q.label for q in p.pilots} <= labels
    (fake / plan.PLAN_FILE).unlink()


def test_one_comparison_label_with_a_short_form_for_plots():
    row = {"dataset": "isic", "set": "id", "backbone": "resnet18", "model": "ga",
           "reference": "resnet18"}
    assert comparison_label(row) == "isic id: ResNet18 +GA vs ResNet18 base"
    assert comparison_label(row, short=True) == "isic ID: +GA vs ResNet18"
    vit = {**row, "set": "ood-pad-ufes-20", "backbone": "vit", "model": "21k"}
    assert comparison_label(vit).startswith("isic ood-pad-ufes-20: ViT")
    assert comparison_label(vit, short=True).startswith("isic OOD pad-ufes-20: ViT")


@pytest.mark.parametrize("argv,flag_message", [
    (["compare", "--summary", "paper", "--margin", "-1"], "--margin must be > 0 pp"),
    (["compare", "--summary", "paper", "--correction", "holm", "--test", "paired"],
     "--test paired needs the per-split results"),
    (["compare", "--summary", "paper", "--test-train-ratio", "0"],
     "--test-train-ratio must be a finite number > 0"),
    (["plan", "--summary", "paper", "--delta", "0.5"], "--delta 0.5 pp does not exceed --margin"),
    (["report", "RUNS", "--alpha", "2"], "--alpha must lie in (0, 1)"),
    (["synth", "suite", "--out", "OUT", "--datasets", "9"], "2 <= --datasets <= 5"),
    (["synth", "path", "--out", "OUT", "--image-size", "8"], "--image-size >= 16"),
    (["study", "demo", "--out", "OUT", "--jobs", "0"], "--jobs must be >= 1"),
    (["study", "demo", "--out", "OUT", "--backend", "ray", "--retries", "-1"],
     "--retries must be >= 0"),
])
def test_the_cli_names_its_flags_for_the_library_s_arguments(argv, flag_message, fake, tmp_path,
                                                              capsys):
    argv = [str(fake) if a == "RUNS" else str(tmp_path) if a == "OUT" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert flag_message in err, err


@pytest.mark.parametrize("command,settings,not_flags", [
    ("compare", CompareSettings, set()),
    ("report", CompareSettings, set()),
    ("plan", PlanSettings, {"alpha"}),
    ("explain", ExplainSettings, set()),
    ("study", SequentialSettings, {"alpha"}),
])
def test_every_setting_a_command_takes_has_a_flag_of_the_same_name(command, settings, not_flags):
    parser = next(p for p in cli._leaves(cli.build_parser()) if p.prog == f"medattn {command}")
    flags = cli.argument_flags(parser)
    defaults = {a.dest: a.default for a in parser._actions}
    for f in dataclasses.fields(settings):
        if f.name in not_flags:
            assert f.name not in flags  # the library's default holds on the CLI
            continue
        assert flags.get(f.name) == "--" + f.name.replace("_", "-"), (command, f.name)
        # and the same default (the command's test default None: corrected or welch by source)
        assert defaults[f.name] == f.default, (command, f.name, defaults[f.name], f.default)


def _argument_errors():
    """(file:line, template) of every ArgumentError raised in the library (not the CLI)."""
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ArgumentError"
                    and node.args):
                parts = node.args[0].values if isinstance(node.args[0], ast.JoinedStr) else \
                    [node.args[0]]
                text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in parts)
                yield f"{path.relative_to(SRC)}:{node.lineno}", text, node.args[1:]


ARGUMENT_ERRORS = list(_argument_errors())


def test_argument_errors_name_arguments_not_flags():
    assert len(ARGUMENT_ERRORS) > 20
    for where, text, arguments in ARGUMENT_ERRORS:
        # a command quoted for the user to run (`ray start --head`) is not one of our flags
        assert not re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", text)), (where, text)
        # it names its arguments, each as a placeholder the CLI can replace ('{name}'; an
        # f-string's computed name shows as '{}' here)
        assert arguments, (where, text)
        for a in arguments:
            name = a.value if isinstance(a, ast.Constant) else ""
            assert f"{{{name}}}" in text, (where, text, name)
