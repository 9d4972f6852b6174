"""Headless chromium for the report tests: open a copy of a page with a script added that writes
its findings as JSON into ``<pre id="medattn-check">``, and read them back from the DOM."""

import json
import re
import shutil
import subprocess


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


SKIP_REASON = "chromium not installed (apt-get install chromium; .ci/run does this)"


def check_in_chromium(html_path, tmp_path, script: str, flags: list[str]) -> dict:
    """The JSON that ``script`` (a ``<script>`` writing ``#medattn-check``) leaves in a copy of
    ``html_path`` opened headless with ``flags`` added to the common ones."""
    page = tmp_path / "page.html"
    page.write_text(html_path.read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                    encoding="utf-8")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", *flags,
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="medattn-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no check output from chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
