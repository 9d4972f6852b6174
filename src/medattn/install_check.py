"""Catch a torch / torchvision pair that cannot work together, before a command fails deep inside.

Where PyTorch's CPU index is unreachable, pip can mix a CPU-only torch with a CUDA torchvision
(or the reverse): ``import torchvision`` then dies with ``operator torchvision::nms does not
exist`` and a 30-line traceback. :func:`check_torch_install` turns that into one message with the
pip line that fixes it. It costs one import of torchvision (which the command does anyway) and one
``nms`` on a 1-box tensor (microseconds).
"""

from __future__ import annotations

from medattn.errors import MedattnError

__all__ = ["InstallError", "build_tag", "check_torch_install", "fix_command"]

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class InstallError(MedattnError):
    """The Python environment cannot run medattn (mismatched torch / torchvision builds)."""

    exit_code = 3


def build_tag(version: str) -> str:
    """The local build tag of a wheel version: ``"2.13.0+cpu" -> "cpu"``, ``"0.28.0" -> ""``."""
    return version.partition("+")[2]


def fix_command(torch_version: str) -> str:
    """The pip line (in backquotes) that reinstalls a matching pair: CPU-only where torch is a
    CPU build."""
    if build_tag(torch_version) == "cpu":
        return f"`pip install --force-reinstall torch torchvision --index-url {CPU_INDEX}`"
    return "`pip install --force-reinstall torch torchvision`"


def _message(torch_version: str, vision: str, why: str) -> str:
    return (f"torch {torch_version} and torchvision {vision} are builds that do not work "
            f"together ({why}); this usually happens when pip mixes PyTorch's CPU index with "
            f"PyPI. Fix it with: {fix_command(torch_version)}")


def _tags_clash(torch_tag: str, vision_tag: str) -> bool:
    # Only the CPU / CUDA split is certain to break (nms is compiled against one of them); an
    # untagged wheel from PyPI is a CUDA build.
    return (torch_tag == "cpu") != (vision_tag == "cpu") and bool(torch_tag or vision_tag)


def check_torch_install() -> None:
    """Raise :class:`InstallError` (one message with the fix) when torch and torchvision are
    builds that cannot run together; return silently otherwise. Imports torch and torchvision."""
    # imported here, inside the check: the imports are what is checked, and the CLI imports this
    # module before it knows whether the command needs torch
    import torch

    tv = torch.__version__
    try:
        import torchvision
    except Exception as err:  # noqa: BLE001  (the failing import is what is being checked)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InstallError(_message(tv, "(unknown version)", f"importing torchvision failed: "
                                                             f"{first}")) from None
    vv = torchvision.__version__
    if _tags_clash(build_tag(tv), build_tag(vv)):
        raise InstallError(_message(tv, vv, f"build tags '+{build_tag(tv) or 'none'}' vs "
                                            f"'+{build_tag(vv) or 'none'}'"))
    try:
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as err:  # noqa: BLE001
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InstallError(_message(tv, vv, f"torchvision.ops.nms failed: {first}")) from None
