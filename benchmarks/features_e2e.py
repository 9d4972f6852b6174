"""Table 3 end to end with trained models on the synthetic skin set (minutes of CPU).

Two synthetic ISIC sets that differ only in the colourful-patch bias (``--bias`` vs 0), one small
ResNet18 trained from scratch on each (medattn's training engine), then ``feature_usage`` on each
run directory. Expected: with the bias, "Colorful patches" is used; without it, it is not; sex (which
the generator draws independently of everything) is not used in either.

    PYTHONPATH=src python benchmarks/features_e2e.py --out /tmp/feat_e2e
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/feat_e2e")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--bias", type=float, default=0.9)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()

    import torch

    from medattn.analysis.features.usage import feature_usage
    from medattn.data.synthetic import write_derm
    from medattn.training.engine import train

    torch.set_num_threads(1)
    out = Path(args.out)
    for label, bias in (("bias", args.bias), ("nobias", 0.0)):
        t0 = time.perf_counter()
        spec, _ = write_derm(out / label / "data", n=args.n, n_ood=1, seed=11, image_size=96,
                             patch_bias=bias, overwrite=True, workers=1)
        runs_dir = out / label / "runs"
        rec = train(args.model, spec, runs_dir=runs_dir, lr=0.05, weight_decay=1e-4, split_seed=0,
                    epochs=args.epochs, image_size=args.image_size, pretrained=False,
                    augment="light", batch_size=32, progress=False, threads=1, cache=True)
        t1 = time.perf_counter()
        res = feature_usage(runs_dir, progress=False)
        t2 = time.perf_counter()
        dec = res.decisions.set_index(["condition", "feature"])
        print(f"\n== patch_bias={bias}: test balanced accuracy "
              f"{rec['metrics']['test']['balanced_accuracy']:.3f}; train {t1 - t0:.0f} s, "
              f"feature analysis {t2 - t1:.0f} s")
        print(res.markdown)
        for cond, feature in dec.index:
            if feature in ("Colorful patches", "Sex", "Age"):
                row = dec.loc[(cond, feature)]
                print(f"  {feature} given the {cond}: n={row['n']}, p cHSIC={row['p_chsic']:.4f} "
                      f"RCoT={row['p_rcot']:.4f} CMIknn={row['p_cmiknn']:.4f} "
                      f"-> used={bool(row['used'])}")


if __name__ == "__main__":
    main()
