"""Table 2 as pictures (issue 26, item 3): the forest plot has a row per comparison with both CIs
and the ROPE; each posterior panel is the distribution whose masses are the table's P columns."""

import dataclasses

import numpy as np
import pytest

from medattn.analysis.compare import compare_runs
from medattn.report.forest import DECISION_COLOURS, _posterior, forest_plot, posterior_grid

from tests.fake_study import write_fake_study


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_study(root)
    return compare_runs(root)


@pytest.mark.slow
def test_forest_plot_rows_cis_and_rope(result):
    fig = forest_plot(result)
    ax = fig.axes[0]
    comps = result.table[result.table.reference.notna()]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(comps)
    assert labels[-1] == "isic ID: +GA vs ResNet18"  # the first comparison on top
    # thick bar = the marking test's CI, thin bar = bootstrap CI, for the first comparison
    first = comps.iloc[0]
    xs = [tuple(np.round(line.get_xdata(), 6)) for line in ax.lines if len(line.get_xdata()) == 2]
    assert tuple(np.round([first.diff_ci_low, first.diff_ci_high], 6)) in xs
    assert tuple(np.round([first.boot_ci_low, first.boot_ci_high], 6)) in xs
    rope = ax.patches[0].get_extents()  # display units: compare in data units
    x0, x1 = ax.transData.inverted().transform([[rope.x0, 0], [rope.x1, 0]])[:, 0]
    assert np.isclose(x0, -1.0, atol=0.05) and np.isclose(x1, 1.0, atol=0.05)
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert {d.get_color() for d in dots} == {DECISION_COLOURS["undecided"]}


def test_posterior_panels_match_the_table(result):
    comps = result.table[result.table.reference.notna()]
    fig = posterior_grid(result)
    assert sum(ax.get_visible() for ax in fig.axes) == len(comps)
    for r in comps.itertuples(index=False):
        post = _posterior(r)
        assert np.isclose(post.sf(1.0), r.p_better, atol=1e-6)
        assert np.isclose(post.cdf(-1.0), r.p_worse, atol=1e-6)
    assert "P = " in fig.axes[0].get_title() and "undecided" in fig.axes[0].get_title()


def test_reading_note_explains_the_case_at_hand(result):
    from medattn.report.table2_view import reading_note

    t = result.table.copy()
    comps = t[t.reference.notna()]
    note = reading_note(result)
    first = comps.iloc[0]  # no bootstrap CI excludes 0 here: the first comparison is the case
    assert note.startswith("**How to read these intervals together.** For isic ID: +GA vs "
                           "ResNet18 base, Welch's p is ")
    assert f"{first.welch_p:.3f} and the corrected t-test's p is {first.p:.3f}" in note
    assert f"[{first.boot_ci_low:+.1f}, {first.boot_ci_high:+.1f}] pp is narrower" in note
    assert '"Undecided" (10 of 10 comparisons)' in note and "docs/statistics.md" in note
    # A bootstrap CI that excludes 0 where the marking CI does not: that comparison is the case.
    i = comps.index[2]
    t.loc[i, ["boot_ci_low", "boot_ci_high"]] = [0.5, 3.0]
    changed = dataclasses.replace(result, table=t)
    assert "For isic ID: ViT-21k vs ResNet18 base" in reading_note(changed)
