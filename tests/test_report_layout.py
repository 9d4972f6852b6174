"""The report in a browser at 1400 px: nothing wider than the page, the verdict on the first
screen (issue 26). Headless chromium, as tests/test_report.py."""


import pytest

from medattn.report import build_report

from tests.browser import SKIP_REASON, check_in_chromium, chromium
from tests.fake_study import write_fake_study

_MEASURE = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // folded ones too
  const w = window.innerWidth;
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > w + 1;
  }).map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(e.getBoundingClientRect().right));
  const v = document.getElementById('verdict');
  const res = {width: w, height: window.innerHeight, wide: wide.slice(0, 20),
               scroll: document.documentElement.scrollWidth,
               verdict_top: v ? v.getBoundingClientRect().top : null,
               verdict_text: v ? v.innerText : ''};
  const pre = document.createElement('pre');
  pre.id = 'medattn-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def measure(html_path, tmp_path, width=1400, height=900) -> dict:
    """What chromium sees of the report at ``width`` x ``height`` px (every <details> opened)."""
    return check_in_chromium(html_path, tmp_path, _MEASURE,
                             ["--hide-scrollbars", f"--window-size={width},{height}"])


@pytest.mark.skipif(chromium() is None, reason=SKIP_REASON)
@pytest.mark.slow
def test_report_fits_1400px_and_answers_first(tmp_path):
    write_fake_study(tmp_path / "study")
    html = build_report(tmp_path / "study", out=tmp_path / "r", parameters=False).html
    res = measure(html, tmp_path)
    assert res["width"] == 1400
    assert res["wide"] == [] and res["scroll"] <= 1400, res
    assert res["verdict_top"] is not None and res["verdict_top"] < res["height"] / 2
    assert "+GA vs ResNet18 base on isic, in-distribution test: undecided" in res["verdict_text"]
