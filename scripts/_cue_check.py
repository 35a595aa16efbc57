"""The shared driver of the source-domain cue-conflict checks (scripts/pointset_shape_bias.py,
scripts/textured_shape_bias.py): the command-line arguments, `medtl pretrain` of every arm and
control, single-cue control folders, one result row per probed model, and the summary over seeds
(mean with its t CI per arm; paired t over seeds for the named differences).  Each script supplies
its source, its arms and its probe."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from medtl.io import json_safe, write_json_atomic  # noqa: E402
from medtl.pretrain import load_pretrain_config, pretrain  # noqa: E402
from medtl.stats.compare import compare_pair, describe  # noqa: E402

METRICS = ("unconditioned", "conditioned", "shape_only", "texture_only", "test_acc")


def parse_args(out_default: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=out_default)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--control-seeds", type=int, default=3)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-pairs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    return ap.parse_args()


def write_folder(root: Path, make: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]],
                 classes: list[str]) -> Path:
    """``make()``'s float images (n, H, W) in [0, 1] with their labels, per split, as
    ROOT/{split}/CLASS/*.png (val is held out of train by the loader); made and written once,
    atomically by folder rename."""
    from PIL import Image

    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    for split, (images, labels) in make().items():
        for i, (img, lab) in enumerate(zip(images, labels)):
            d = tmp / split / classes[lab]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"{split}{i:05d}.png")
    (tmp / ".complete").write_text("")
    tmp.rename(root)
    return root


class Check:
    """Pretrains and probes the arms of one check, one row per (arm, seed)."""

    def __init__(self, args: argparse.Namespace, arms: tuple[str, ...], classes: list[str],
                 probe: Callable[[Callable], dict]):
        import torch

        torch.set_num_threads(args.threads)
        self.args, self.arms, self.classes, self.probe_fn = args, arms, classes, probe
        self.out = Path(args.out)
        self.rows: dict[str, dict[int, dict]] = {a: {} for a in arms}
        self.t0 = time.time()

    def common(self, seed: int) -> list[str]:
        a = self.args
        return [f"seed={seed}", f"pretrain.image_size={a.image_size}", f"pretrain.epochs={a.epochs}",
                f"train.num_threads={a.threads}", "train.precision=fp32"]

    def fractal(self) -> list[str]:
        return [f"pretrain.classes={self.args.classes}", f"pretrain.instances={self.args.instances}"]

    def run(self, arm: str, seed: int, sets: list[str], folder: str, stage: str) -> None:
        """`medtl pretrain` with ``sets`` into OUT/folder/seed-N (reused when finished), then probe
        the final stage ``stage``."""
        from medtl.models.inference import load_finished, predict_proba

        out = self.out / folder / f"seed-{seed}"
        res = pretrain(load_pretrain_config(None, self.common(seed) + sets), out, progress=False)
        fm = load_finished(out / stage)
        assert list(fm.classes) == self.classes, (arm, fm.classes)
        r = self.probe_fn(lambda x: predict_proba(fm.model, x, fm.device, 512))
        self.rows[arm][seed] = v = {
            "unconditioned": r["unconditioned"]["shape_bias"],
            "unconditioned_ci": [r["unconditioned"]["ci_low"], r["unconditioned"]["ci_high"]],
            "follow_either_fraction": r["unconditioned"]["follow_either_fraction"],
            "conditioned": r["conditioned"]["shape_bias"], "reason": r["conditioned"]["reason"],
            "n_qualified": r["n_qualified"], "shape_only": r["shape_only"]["balanced_acc"],
            "texture_only": r["texture_only"]["balanced_acc"], "test_acc": res["stages"][-1]["test_acc"],
            "sha256": res["sha256"], "run": str(out / stage)}
        print(f"{arm:15s} seed {seed}: own test acc {v['test_acc']:.3f}; shape-only {v['shape_only']:.2f}, "
              f"texture-only {v['texture_only']:.2f}; shape fraction {v['unconditioned']:.3f} (all pairs, "
              f"{v['follow_either_fraction']:.2f} follow a source), conditioned {v['conditioned']}  "
              f"[{time.time() - self.t0:.0f}s]", flush=True)

    def finish(self, kind: str, differences: dict[str, tuple[str, str]], **extra) -> int:
        """The summary (``differences``: {key: (arm a, arm b)}, each a - b paired over seeds),
        printed and written to --json."""
        summary: dict = {}
        for key in METRICS:
            vals = {a: {s: v[key] for s, v in self.rows[a].items() if v[key] is not None} for a in self.arms}
            summary[key] = {"by_arm": {a: describe(list(v.values())) | {"seeds": sorted(v)} for a, v in vals.items()}}
            summary[key] |= {name: compare_pair(vals[a], vals[b]) for name, (a, b) in differences.items()}
        result = json_safe({"kind": kind, "args": vars(self.args), **extra, "runs": self.rows, "summary": summary,
                            "wall_time_s": round(time.time() - self.t0, 1)})
        for key in METRICS:
            s = summary[key]
            means = ", ".join(f"{a} {s['by_arm'][a]['mean']:.3f}" for a in self.arms)
            d = s["sin_minus_in"]
            print(f"{key}: {means}; sin - in {d.get('diff', float('nan')):+.3f} (95% CI "
                  f"{d.get('diff_ci_low', float('nan')):+.3f} to {d.get('diff_ci_high', float('nan')):+.3f}), "
                  f"p={d.get('p', float('nan')):.3g}, n={d.get('n_pairs')}")
        if self.args.json:
            write_json_atomic(Path(self.args.json), result)
        return 0
