"""Every message that names a CLI flag names one that exists, and the CLI explains itself.

The messages are collected from the source (every string constant and f-string of
``src/medattn``: errors, warnings, log lines, help texts), the flags from the parser itself, so
flags and messages added later are covered without editing this file.
"""

import argparse
import ast
import re
from pathlib import Path

import pytest

from medattn import __version__
from medattn.cli import build_parser, main

SRC = Path(__file__).resolve().parents[1] / "src" / "medattn"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _commands(parser: argparse.ArgumentParser, path=()) -> dict[tuple, argparse.ArgumentParser]:
    """Every (sub-)command's parser by its path, e.g. ("synth", "derm")."""
    out = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_commands(sub, path + (name,)))
    return out


COMMANDS = _commands(build_parser())
OPTIONS = {path: {s for a in p._actions for s in a.option_strings} for path, p in COMMANDS.items()}


def _strings(tree: ast.AST):
    """(line, text) of every string constant and f-string (its literal parts joined by '{}')."""
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            inside_fstring.update(id(v) for v in node.values)
            yield node.lineno, "".join(str(p) for p in parts)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in inside_fstring):
            yield node.lineno, node.value


def _joined(tree: ast.AST):
    """Implicitly concatenated strings arrive as one node; explicit '+' chains are joined too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            texts = []
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    texts.append(side.value)
                elif isinstance(side, ast.JoinedStr):
                    texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}"
                                         for v in side.values))
            if len(texts) == 2:
                yield node.lineno, "".join(texts)


def _foreign(text: str, start: int) -> bool:
    """A flag inside a `quoted command` of another program (`ray start --head`)."""
    before = text[:start]
    if before.count("`") % 2 == 0:
        return False
    span = before[before.rindex("`") + 1:].split()
    return bool(span) and span[0] != "medattn"


def _named_command(text: str, start: int) -> tuple | None:
    """The command a message names for its flag: `medattn train ... --x` (in one quoted
    command, or one clause) or a message that starts `train: ... --x`."""
    names = {p[0] for p in COMMANDS if p}
    before = text[:start]
    found = None
    for m in re.finditer(r"medattn ([a-z]+)(?: ([a-z]+))?", before):
        between = before[m.end():]
        if m.group(1) in names and not re.search(r"[`(;]|\. ", between):
            found = (m.group(1),) + ((m.group(2),) if (m.group(1), m.group(2)) in COMMANDS
                                     else ())
    m = re.match(r"\s*([a-z]+): ", before)
    if found is None and m and m.group(1) in names:
        found = (m.group(1),)
    return found


def _mentions():
    """(file:line, flag, named command or None, message) for every flag a message names."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in [*_strings(tree), *_joined(tree)]:
            if FLAG.fullmatch(text):  # an option's own name (add_argument), not a message
                continue
            for m in FLAG.finditer(text):
                if not _foreign(text, m.start()):
                    out.append((f"{path.relative_to(SRC)}:{line}", m.group(),
                                _named_command(text, m.start()), text))
    return out


MENTIONS = _mentions()


def _argv_with(path: tuple, flag: str) -> list[str]:
    """A command line of ``path`` that passes ``flag`` (with a value if it takes one) and
    whatever the command requires."""
    parser = COMMANDS[path]
    argv = list(path)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
            continue
        wanted = flag in action.option_strings
        if not (wanted or action.required or (not action.option_strings and action.nargs in
                                              (None, "+"))):
            continue
        value = [str(next(iter(action.choices)))] if action.choices else ["1"]
        if action.nargs == 0:
            value = []
        elif isinstance(action.nargs, int):
            value = value * action.nargs
        argv += ([flag] if wanted else action.option_strings[:1]) + value
    return argv


def test_messages_naming_flags_were_found():
    # the collection itself works: known messages of several parts are in it
    flags = {f for _, f, _, _ in MENTIONS}
    assert {"--pretrained", "--restart", "--include-diverged", "--test-train-ratio",
            "--tracking"} <= flags
    assert len(MENTIONS) > 30


@pytest.mark.parametrize("where,flag,command,text", MENTIONS,
                         ids=[f"{w} {f}" for w, f, _, _ in MENTIONS])
def test_every_flag_a_message_names_exists(where, flag, command, text):
    having = [p for p, opts in OPTIONS.items() if flag in opts]
    assert having, f"{where}: {flag} is no option of any command: {text!r}"
    if command is not None:
        assert flag in OPTIONS.get(command, set()), (
            f"{where}: `medattn {' '.join(command)}` has no {flag}: {text!r}")
    for path in ([command] if command else having):
        action = next(a for a in COMMANDS[path]._actions if flag in a.option_strings)
        if isinstance(action, (argparse._VersionAction, argparse._HelpAction)):
            continue  # they exit on parsing; test_version runs --version
        argv = _argv_with(path, flag)
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: the parser refuses {' '.join(argv)!r} ({text!r})")


def test_every_option_has_help_and_commands_are_in_workflow_order():
    for path, parser in COMMANDS.items():
        for action in parser._actions:
            if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help is not argparse.SUPPRESS, (path, action.dest)
    top = [a for a in COMMANDS[()]._actions if isinstance(a, argparse._SubParsersAction)][0]
    assert list(top.choices) == ["demo", "data", "synth", "models", "params", "train", "plan",
                                 "study", "compare", "features", "explain", "report"]
    listed = [a.dest for a in top._choices_actions]
    assert listed == list(top.choices)  # `medattn --help` lists them in that order


def test_every_command_takes_quiet():
    for path, opts in OPTIONS.items():
        if path and not any(isinstance(a, argparse._SubParsersAction)
                            for a in COMMANDS[path]._actions):
            assert {"-q", "--quiet"} <= opts, path


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"medattn {__version__}"


@pytest.mark.parametrize("where", ["after", "before"])
def test_quiet_silences_bars_and_info_lines_not_results(tmp_path, capsys, where):
    argv = ["synth", "derm", "--out", str(tmp_path / where), "--n", "24", "--n-ood", "4",
            "--size", "32", "--workers", "1"]
    argv = argv + ["--quiet"] if where == "after" else ["-q"] + argv
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0].startswith("isic:")  # the result still prints
    assert main(["synth", "derm", "--out", str(tmp_path / "loud"), "--n", "24", "--n-ood", "4",
                 "--size", "32", "--workers", "1"]) == 0
    assert "synth isic: 24/24" in capsys.readouterr().err  # without it: the bar, as a line
