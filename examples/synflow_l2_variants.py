"""Mask overlap of the paper's SynFlow-L2 and the authors' code's variant on the 6x100 MLP.

``synflow-l2`` (p=2, a=1, the paper's formula) against ``synflow-l2-code`` (p=1, a=2, the
authors' public code), 100 rounds, on the same weights (seed 0), at 10x, 100x and 1000x
compression: the Jaccard index of the kept weights. See docs/results.md.

Usage: ``OMP_NUM_THREADS=1 python examples/synflow_l2_variants.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import torch

import pruners


def main() -> None:
    data = pruners.load_dataset("digits")
    torch.manual_seed(0)
    model = pruners.build_model("fc", data.input_shape, data.num_classes, width=100, depth=6)
    for density in (0.1, 0.01, 0.001):
        paper = pruners.prune(model, "synflow-l2", density, 100, input_shape=data.input_shape)
        code = pruners.prune(model, "synflow-l2-code", density, 100, input_shape=data.input_shape)
        both = sum(int((paper[n] & code[n]).sum()) for n in paper)
        either = sum(int((paper[n] | code[n]).sum()) for n in paper)
        kept = sum(int(m.sum()) for m in paper.values())
        print(f"{1 / density:>6.0f}x  kept {kept:>5}  Jaccard {both / either:.3f}")


if __name__ == "__main__":
    main()
