"""Draw medattn's structure: its top-level modules and packages, grouped by layer, with the number
of import statements between each pair, as a Mermaid flowchart (Markdown that GitHub renders).

    python tools/draw_layers.py                  # this checkout's src/
    python tools/draw_layers.py --src OTHER/src  # another tree (an old commit, a branch)

The layer order is read from pyproject.toml (the ``layers`` contract that ``lint-imports``
checks). An edge that points upwards, or joins two modules of one layer, is drawn red and listed
under the drawing with one of its imports; a module no layer names is drawn apart and its edges
are not judged. Imports are read by grimp (import-linter's graph library): every import statement,
inside functions too, except those under ``if TYPE_CHECKING:``, as the contract counts them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tomllib
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "medattn"


def read_layers(config: Path) -> list[list[str]]:
    """The ``layers`` contract of ``config`` (pyproject.toml): top layer first, each a list of
    top-level names (``cli``, ``analysis``, ...)."""
    contracts = tomllib.loads(config.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")["layers"]
    return [[m.strip().removeprefix(f"{PACKAGE}.") for m in layer.split("|")] for layer in layers]


def top_level_edges(src: Path) -> tuple[set[str], Counter, dict, list[list[str]]]:
    """Top-level units of the package under ``src``, the number of import statements between
    each ordered pair of them, one example ``(importer, imported, line)`` per pair, and the
    import cycles between modules (:func:`module_cycles`)."""
    sys.path.insert(0, str(src))  # before grimp looks the package up: this tree, not an installed one
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin or not Path(spec.origin).resolve().is_relative_to(src):
        raise SystemExit(f"{PACKAGE} resolves to {spec and spec.origin}, not to {src}")
    graph = grimp.build_graph(PACKAGE, cache_dir=None, exclude_type_checking_imports=True)
    units = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    counts: Counter = Counter()
    example: dict = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = importer.split("."), imported.split(".")
            if len(a) < 2 or len(b) < 2 or a[1] == b[1]:
                continue  # the package root, or inside one unit
            details = graph.get_import_details(importer=importer, imported=imported)
            counts[a[1], b[1]] += max(1, len(details))
            if (a[1], b[1]) not in example and details:
                example[a[1], b[1]] = (importer, imported, details[0]["line_number"])
    return units, counts, example, module_cycles(graph)


def module_cycles(graph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (strongly connected
    components of the module graph, Tarjan's algorithm), each sorted; a package counts as the
    module its ``__init__`` is."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:  # iterative, so deep chains do not hit the recursion limit
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def mermaid(units: set[str], counts: Counter, example: dict, layers: list[list[str]]
            ) -> tuple[str, list[str]]:
    """The Mermaid flowchart and the broken edges in words."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    lines = ["```mermaid", "flowchart TD"]
    for i, layer in enumerate(layers):
        present = [u for u in layer if u in units]
        if present:
            lines.append(f"  subgraph L{i}[\"layer {i + 1}\"]")
            lines += [f"    {u}" for u in present]
            lines.append("  end")
    unplaced = sorted(units - set(rank))
    if unplaced:
        lines.append("  subgraph unplaced[\"in no layer\"]")
        lines += [f"    {u}" for u in unplaced]
        lines.append("  end")
    red, broken = [], []
    for k, ((a, b), n) in enumerate(sorted(counts.items(), key=lambda e: (rank.get(e[0][0], 99),
                                                                           e[0]))):
        bad = a in rank and b in rank and rank[a] >= rank[b]
        lines.append(f"  {a} -->|{n}{' upward' if bad and rank[a] > rank[b] else ''}"
                     f"{' same layer' if bad and rank[a] == rank[b] else ''}| {b}")
        if bad:
            red.append(k)
            imp, dep, line = example.get((a, b), ("?", "?", "?"))
            broken.append(f"{a} -> {b}: {n} import(s), e.g. {imp} -> {dep} (l.{line})")
    if red:
        lines.append(f"  linkStyle {','.join(map(str, red))} stroke:#d00,stroke-width:3px,color:#d00")
    lines.append("```")
    return "\n".join(lines), broken


def main(argv: list[str] | None = None) -> int:
    """Print the drawing (and the broken edges) for the tree under ``--src``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=ROOT / "src",
                   help="the folder that holds the medattn package (default: this checkout's src)")
    p.add_argument("--config", type=Path, default=ROOT / "pyproject.toml",
                   help="pyproject.toml with the layers contract (default: this checkout's)")
    args = p.parse_args(argv)
    if not (args.src / PACKAGE / "__init__.py").is_file():
        p.error(f"--src {args.src}: no {PACKAGE}/__init__.py there; give the folder that holds "
                f"the {PACKAGE} package (e.g. src)")
    units, counts, example, cycles = top_level_edges(args.src.resolve())
    drawing, broken = mermaid(units, counts, example, read_layers(args.config))
    print(drawing)
    print()
    if broken:
        print(f"{len(broken)} edge(s) break the layer order (red):")
        print("\n".join(f"- {b}" for b in broken))
    else:
        print("No edge breaks the layer order.")
    print()
    if cycles:
        print(f"{len(cycles)} import cycle(s) between modules:")
        print("\n".join(f"- {' <-> '.join(c)}" for c in cycles))
    else:
        print("No import cycle between modules.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
