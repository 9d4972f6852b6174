"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """A developer's MEDATTN_TRACKING_URI must not receive the test suite's runs; quiet mode and
    the marks of warnings already shown (both travel in the environment) start unset."""
    for name in ("MEDATTN_TRACKING_URI", "MEDATTN_QUIET", "MEDATTN_SHOWN_WARNINGS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (steady on the shared 2-core machine), then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cli_error(capsys):
    """``check(rc, code, *needles)``: a CLI command exited ``code`` printing exactly one error line
    (no traceback; progress bars aside) that holds every needle; returns that line. What the
    command printed to stdout is left in ``check.out``."""
    def check(rc, code, *needles):
        out, err = capsys.readouterr()
        check.out = out
        assert rc == code, err
        lines = [ln for ln in err.replace("\r", "\n").splitlines() if ": error: " in ln]
        assert "Traceback" not in err and len(lines) == 1, err
        line = lines[0][lines[0].index("medattn "):]
        for needle in needles:
            assert needle in line, (needle, line)
        return line
    return check


@pytest.fixture(scope="session")
def tiny_derm(tmp_path_factory):
    """``(isic_spec, pad_spec)``: 70 ISIC-layout and 16 PAD-UFES-20-layout synthetic images of
    36 px, shared by the tests (read-only: copy it before changing it)."""
    from medattn.data.synthetic import write_derm
    return write_derm(tmp_path_factory.mktemp("tiny_derm"), n=70, n_ood=16, image_size=36,
                      workers=1)
