"""Parameter counts (the paper's Table 1).

The paper counted only tensors named ``weight`` or ``bias`` of modules, so ViT ``pos_embed`` /
``cls_token`` and the LA relative embeddings (``rel_h``, ``rel_w``) are left out; the full count
(every trainable parameter) is reported beside it.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from medattn.models.zoo import create_model, describe_model, list_models, parse_model_name
from medattn.render import markdown_table

__all__ = ["count_parameters", "parameter_table"]


def count_parameters(model: nn.Module, convention: str = "paper") -> int:
    """Number of trainable parameters. ``convention="paper"``: only ``*.weight`` / ``*.bias``;
    ``"full"``: all of them."""
    if convention not in ("paper", "full"):
        raise ValueError(f"convention must be 'paper' or 'full', got {convention!r}")
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and (convention == "full" or n.rsplit(".", 1)[-1] in ("weight", "bias")))


def parameter_table(num_classes: int = 3, models: list[str] | None = None) -> pd.DataFrame:
    """Table 1 from the real models (randomly initialised; counts do not depend on weights).

    Columns: ``model``, ``backbone``, ``variant``, ``params_paper`` / ``params_full`` (counts),
    ``params_paper_m`` / ``params_full_m`` (millions, 2 decimals), ``rel_change_pct`` (signed change of
    the paper count relative to the backbone's base model, percent, 2 decimals: LA models are
    negative, the paper prints the magnitude; NaN for the ViTs, which have no base),
    ``description``. One row per model name (both ViT-tiny rows share the paper's single ViT row).
    """
    rows = []
    for name in models or list_models():
        spec = parse_model_name(name)
        with torch.device("meta"):  # shapes only: no memory, no weight init cost
            model = create_model(spec.name, num_classes)
        rows.append(dict(model=spec.name, backbone=spec.backbone, variant=spec.variant,
                         params_paper=count_parameters(model, "paper"),
                         params_full=count_parameters(model, "full"),
                         description=describe_model(spec.name)))
        del model
    table = pd.DataFrame(rows)
    base = {r.backbone: r.params_paper for r in table.itertuples() if r.variant == "base"}
    if len(base) < table.backbone[table.backbone != "vit"].nunique():
        with torch.device("meta"):
            base.update({bb: count_parameters(create_model(bb, num_classes), "paper")
                         for bb in set(table.backbone) - set(base) - {"vit"}})
    table["params_paper_m"] = (table.params_paper / 1e6).round(2)
    table["params_full_m"] = (table.params_full / 1e6).round(2)
    table["rel_change_pct"] = [round(100 * (p - base[b]) / base[b], 2) if b in base else float("nan")
                               for p, b in zip(table.params_paper, table.backbone)]
    cols = ["model", "backbone", "variant", "params_paper_m", "params_full_m", "rel_change_pct",
            "params_paper", "params_full", "description"]
    return table[cols]


def parameter_table_text(fmt: str = "md", num_classes: int = 3, models: list[str] | None = None) -> str:
    """Table 1 as text: ``fmt`` is ``md`` (Markdown), ``csv`` or ``json`` (a list of row objects);
    ``models``: the rows (default: every registered model, :func:`~medattn.models.list_models`)."""
    table = parameter_table(num_classes, models)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2) + "\n"
    if fmt != "md":
        raise ValueError(f"fmt must be 'md', 'csv' or 'json', got {fmt!r}")
    shown = pd.DataFrame({
        "model": table["model"],
        "params (paper, M)": [f"{x:.2f}" for x in table["params_paper_m"]],
        "params (full, M)": [f"{x:.2f}" for x in table["params_full_m"]],
        "change vs base (%)": ["" if x != x else f"{x:+.2f}" for x in table["rel_change_pct"]]})
    return markdown_table(shown, align="lrrr") + "\n"
