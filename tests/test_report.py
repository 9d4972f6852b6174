"""The study report: contents, self-containment, and that it opens offline in headless chromium."""

import base64
import html as html_lib
import io
import re
import shutil

import pandas as pd
import pytest
from PIL import Image

from medattn import cli
from medattn.errors import DataError
from medattn.report import EXPLAIN_HINT, FEATURES_HINT, build_report

from tests.browser import SKIP_REASON, check_in_chromium, chromium
from tests.fake_study import DIVERGED_RUN, FAILED_RUN, write_fake_study

SECTIONS = ["verdict", "overview", "table1", "table2", "across", "accuracy", "curves", "confusion",
            "search", "design", "table3", "table4", "runs", "reproduce"]


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def _hint(hint: str) -> str:
    return hint.replace("`", "")


def _png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_study(root)
    feat = root / "analysis" / "features"
    feat.mkdir(parents=True)
    pd.DataFrame({"model": ["resnet18", "resnet18+ga"], "age": ["used", "used"],
                  "asymmetry": ["used", "not used"]}).to_csv(feat / "table3.csv", index=False)
    (feat / "table3.md").write_text("| model | age |\n|---|---|\n| resnet18 | used |\n")
    (feat / "pvalues.png").write_bytes(_png())
    html = build_report(root, parameters=True).html
    return root, html


@pytest.mark.slow
def test_report_files_and_sections(study):
    root, html_path = study
    assert html_path == root / "report" / "report.html"
    out = html_path.parent
    for name in ["report.md", "table1.csv", "table1.tex", "table2.csv", "table2.md", "table2.tex",
                 "runs.csv"]:
        assert (out / name).stat().st_size > 0, name
    html = html_path.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    # Table 2's paired statistics: corrected p, Bayes, the bootstrap CI beside the across-run CI
    # (also for the OOD set), per-split differences, divergence rates, converged vs all runs.
    t2 = _text(html.split('<section id="table2">')[1].split("</section>")[0])
    for part in ["p (corrected t-test)", "P(worse / equiv. / better)", "bootstrap 95% CI (pp)",
                 "Per-split differences (pp)", "Divergence rate per model", "1 / 5",
                 "Converged runs and all runs", "all runs: diff (pp)", "Welch p (paper)",
                 "ood-pad-ufes-20", "r = n_test / n_train = 0.2857"]:
        assert part in t2, part
    for name in ["pairs.csv", "divergence.csv", "sensitivity.csv"]:
        assert len(pd.read_csv(out / name)) > 0, name
    t2csv = pd.read_csv(out / "table2.csv")
    ood = t2csv[(t2csv.set == "ood-pad-ufes-20") & t2csv.reference.notna()]
    assert ood.boot_ci_low.notna().all() and (ood.boot_ci_low < ood.boot_ci_high).all()
    # Table 1 comes from the model zoo: the paper's ResNet18 +GA count.
    t1 = pd.read_csv(out / "table1.csv")
    assert "11.22" in t1.astype(str).to_numpy().ravel().tolist()
    # Table 2 with n, the diverged and failed runs named, +LA missing entirely.
    assert "[n=4]" in html and DIVERGED_RUN in html and FAILED_RUN in html
    assert "CUDA out of memory" in html
    runs_sec = html.split('<section id="runs">')[1].split("</section>")[0]
    assert "resnet18+la" in runs_sec and "<td>final</td><td>5</td><td>0</td><td>5</td>" in runs_sec
    # Table 3 from the features analysis is shown; Table 4 says how to make it.
    t3 = html.split('<section id="table3">')[1].split("</section>")[0]
    assert "asymmetry" in t3 and "data:image/png;base64," in t3
    assert _hint(EXPLAIN_HINT) in _text(html) and _hint(FEATURES_HINT) not in _text(html)
    # Reproduction: the config and versions.
    assert "first_seed: 100" in html and "2.14.1" in html
    # One data set: the section across data sets says why it is absent.
    across = html_lib.unescape(_text(html.split('<section id="across">')[1].split("</section>")[0]))
    assert "needs >= 2 data sets; these runs hold 1 (isic)" in across


def test_report_is_self_contained(study):
    _, html_path = study
    html = html_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert not re.search(r"url\((?!data:)", html)
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    # forest + posteriors, 2 accuracy plots, 1 curves, 2 confusion grids, 1 search, 1 table-3
    assert len(imgs) == 9
    for data in imgs:
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.width >= 40 and im.height >= 30


def test_markdown_links_existing_figures(study):
    _, html_path = study
    md = (html_path.parent / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 9
    for rel in links:
        assert (html_path.parent / rel).is_file()
    assert "## Table 2: balanced accuracy and comparisons" in md


@pytest.mark.slow
def test_report_table4_section_uses_explain_outputs(tmp_path):
    write_fake_study(tmp_path)
    ex = tmp_path / "analysis" / "explain"
    ex.mkdir(parents=True)
    (ex / "table4.png").write_bytes(_png((10, 120, 200)))
    (ex / "explain_summary.csv").write_text("model,map,mass_in_lesion\nresnet18,gradcam,0.61\n")
    html = build_report(tmp_path, out=tmp_path / "r", parameters=False).html.read_text()
    t4 = html.split('<section id="table4">')[1].split("</section>")[0]
    assert "mass_in_lesion" in t4 and "data:image/png;base64," in t4
    assert _hint(EXPLAIN_HINT) not in _text(t4) and _hint(FEATURES_HINT) in _text(html)


@pytest.mark.slow
def test_report_without_final_runs_and_bad_dir(tmp_path):
    write_fake_study(tmp_path)
    for d in (tmp_path / "runs").iterdir():
        if d.name.startswith("final-"):
            shutil.rmtree(d)
    html = build_report(tmp_path, parameters=False).html.read_text()
    assert "no finished final runs" in html
    assert '<section id="search">' in html and "data:image/png" in html  # heat map still there
    with pytest.raises(DataError, match="runs/"):
        build_report(tmp_path / "nope")


@pytest.mark.slow
def test_cli_report(tmp_path, capsys, monkeypatch):
    write_fake_study(tmp_path)
    monkeypatch.setattr("medattn.report.tables.table1",
                        lambda num_classes=3, models=None: pd.DataFrame({"model": ["x"], "params": [1.0]}))
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip().endswith("out/report.html")
    assert (tmp_path / "out" / "report.html").is_file()
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "w"), "--test", "welch",
                     "--bootstrap", "0", "--test-train-ratio", "0.5"]) == 0
    html = _text((tmp_path / "w" / "report.html").read_text(encoding="utf-8"))
    assert "p (Welch&#x27;s t-test)" in html and "bootstrap 95% CI" not in html
    assert "0.5 as given (test_train_ratio; CLI --test-train-ratio)" in html


_CHECK = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // folded tables too
  const imgs = [...document.images];
  const res = {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    sections: [...document.querySelectorAll('section')].filter(s => s.offsetHeight > 0).map(s => s.id),
    external: performance.getEntriesByType('resource').map(e => e.name)
      .filter(n => !n.startsWith('data:')),
    table2: document.getElementById('table2').innerText,
  };
  const pre = document.createElement('pre');
  pre.id = 'medattn-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(chromium() is None, reason=SKIP_REASON)
@pytest.mark.slow
def test_report_opens_offline_in_headless_chromium(study, tmp_path):
    _, html_path = study
    # The report has no scripts; a copy gets one that records what the browser loaded.
    res = check_in_chromium(html_path, tmp_path, _CHECK,
                            ["--disable-component-update", "--host-resolver-rules=MAP * ~NOTFOUND",
                             "--proxy-server=127.0.0.1:9"])
    assert res["images"] == 9  # 7 + the forest plot and the posteriors of Table 2
    assert res["broken"] == 0
    assert res["sections"] == SECTIONS
    assert res["external"] == []
    # What a reader sees of the paired statistics, as rendered by the browser.
    for part in ["Bayes", "undecided", "bootstrap 95% CI (pp)", "Divergence rate per model",
                 "Converged runs and all runs", "Per-split differences (pp)"]:
        assert part in res["table2"], part


def test_figures_are_labelled_and_keep_boxes_readable():
    from medattn.report import figures as F

    runs = pd.DataFrame({
        "backbone": ["resnet18"] * 4 + ["resnet18"] * 3, "model": ["base"] * 4 + ["ga"] * 3,
        "bacc_pct": [74.0, 75.0, 73.5, 74.4, 70.0, 71.2, 100 / 3],
        "status": ["done"] * 6 + ["diverged"],
        "included": [True] * 6 + [False]})
    fig = F.bacc_dots(runs, "id", "isic: in-distribution test")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "balanced accuracy (%)" and ax.get_xlabel() == "model"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ResNet18 base", "ResNet18 +GA"]
    # The diverged run at chance does not stretch the axis; it is drawn at the edge with its value.
    assert ax.get_ylim()[0] > 60 and "33.3" in [t.get_text() for t in ax.texts]
    legend = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else [
        t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["run (included)", "excluded run (diverged)"]
    F.to_png(fig)

    recs = [{"backbone": "resnet18", "variant": "base", "model": "resnet18", "lr": lr,
             "weight_decay": wd, "metrics": {"val": {"balanced_accuracy": 0.5 + lr + wd}}}
            for lr in (0.01, 0.1) for wd in (0.0, 0.001)]
    sel = pd.DataFrame({"model": ["resnet18"], "lr": [0.1], "weight_decay": [0.001]})
    fig = F.hp_heatmaps(recs, "isic", sel)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("weight decay", "learning rate")
    boxes = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert len(boxes) == 1 and boxes[0].get_xy() == (0.5, 0.5)  # column wd=0.001, row lr=0.1
    assert fig.axes[-1].get_ylabel() == "validation balanced accuracy (%)"  # the colour bar
    F.to_png(fig)
