"""Explanations for a fixed seeded sample of test images, and a 2-D embedding of features.

* Grad-CAM (captum ``LayerGradCam``) on the last convolutional stage (``backbone.layer4`` for
  ResNets; else the last ``Conv2d``), ReLU'd and upsampled to the image size;
* gradient saliency (captum ``Saliency``: |∂ logit / ∂ pixel|);
* occlusion (captum ``Occlusion``): the drop of the target logit when a black square of
  ~H/7 px (stride half of it) covers the image, batched over positions;
* the target is the clean decision's class;
* multi-label runs: per label, for the (up to) :data:`TOP_LABELS` most prevalent labels of the
  test split, a seeded sample of test images that have that label (``n_samples`` split evenly
  over the labels, at least one each); each map explains that label's logit;
* embedding: penultimate features (``model.features``) of the test set projected to 2-D by
  PCA (default) or t-SNE, coloured by true class (multi-label: by the most prevalent label).

PNG panels are written to RUN/probes/; the sample is identified only by test-set index.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..figures import new_figure, write_png
from ..models.inference import predict_proba
from .registry import Probe, register
from .runs import ProbeRun, cached_probe, decide, decision_facts, sample_indices, top_labels

DEFAULTS = {"n_samples": 8, "seed": 0, "embedding": "pca", "n_embed": 2000, "batch_size": 256}
TOP_LABELS = 3  # multi-label runs: the labels explained (most prevalent in the test split)


def _target_layer(model: torch.nn.Module, x: torch.Tensor, min_size: int = 4) -> tuple[str, torch.nn.Module]:
    """The deepest ResNet stage whose feature map is at least ``min_size`` px (at 28-32 px
    input layer4 is 1x1 and its Grad-CAM carries no spatial information); else the last Conv2d."""
    bb = getattr(model, "backbone", model)
    stages = [n for n in ("layer4", "layer3", "layer2", "layer1") if hasattr(bb, n)]
    if stages:
        sizes = {}
        hooks = [getattr(bb, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, min(o.shape[-2:])))
                 for n in stages]
        try:
            with torch.no_grad():
                model(x[:1])
        finally:
            for h in hooks:
                h.remove()
        for n in stages:
            if sizes.get(n, 0) >= min_size:
                return n, getattr(bb, n)
        return stages[-1], getattr(bb, stages[-1])
    convs = [m for m in bb.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ConfigError("explain: the backbone has no Conv2d layer for Grad-CAM")
    return "last_conv", convs[-1]


def _norm01(a: np.ndarray) -> np.ndarray:
    a = a - a.min(axis=(1, 2), keepdims=True)
    m = a.max(axis=(1, 2), keepdims=True)
    return np.divide(a, m, out=np.zeros_like(a), where=m > 1e-12)


def attributions(run: ProbeRun, x: torch.Tensor, target: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Grad-CAM, saliency and occlusion maps (n,H,W), each scaled to [0,1] per image."""
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion, Saliency

    model = run.model.float().eval()
    xd = x.to(run.device).float()
    t = torch.as_tensor(target, dtype=torch.long, device=run.device)
    H, W = x.shape[-2:]
    layer_name, layer = _target_layer(model, xd)
    with torch.enable_grad():
        cam = LayerGradCam(model, layer).attribute(xd, target=t, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam, (H, W), interpolate_mode="bilinear")
        sal = Saliency(model).attribute(xd.clone().requires_grad_(True), target=t, abs=True)
    win = max(2, H // 7)
    stride = max(1, win // 2)
    with torch.no_grad():
        occ = Occlusion(model).attribute(xd, target=t, sliding_window_shapes=(1, win, win), strides=(1, stride, stride),
                                         baselines=0.0, perturbations_per_eval=64)
    return {"gradcam": _norm01(cam.detach().cpu().numpy()[:, 0]),
            "saliency": _norm01(sal.detach().cpu().numpy()[:, 0]),
            "occlusion": _norm01(np.clip(occ.detach().cpu().numpy()[:, 0], 0, None))}, layer_name


@torch.no_grad()
def features(run: ProbeRun, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        out.append(run.model.features(x[i:i + batch_size].to(run.device).float()).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def embed(feats: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, dict]:
    from sklearn.decomposition import PCA

    if method == "pca":
        p = PCA(n_components=2, random_state=seed).fit(feats)
        return p.transform(feats), {"explained_variance_ratio": [float(v) for v in p.explained_variance_ratio_]}
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = float(min(30, max(2, (len(feats) - 1) // 3)))
        return TSNE(n_components=2, random_state=seed, perplexity=perp, init="pca").fit_transform(feats), \
            {"perplexity": perp}
    raise ConfigError(f"embedding must be 'pca' or 'tsne' (got {method!r})")


def compute_explain(run: ProbeRun, *, n_samples: int = 8, seed: int = 0, embedding: str = "pca",
                    n_embed: int = 2000, batch_size: int = 256, plots: bool = True) -> dict:
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1 (got {n_samples})")
    t0 = time.time()
    if run.multilabel:
        idx, target = label_samples(run, n_samples, seed)
        x = run.x(idx)
        prob = run.proba(x)
    else:
        idx = sample_indices(len(run.labels), n_samples, seed, run.labels)
        x = run.x(idx)
        prob = predict_proba(run.model, x, run.device)
        target = decide(prob, run.task, run.threshold)
    maps, layer_name = attributions(run, x, target)
    eidx = sample_indices(len(run.labels), n_embed, seed, run.labels)
    xy, info = embed(features(run, run.x(eidx), batch_size), embedding, seed)
    # agreement between methods: mean Pearson correlation of Grad-CAM with the other maps
    def corr(a, b):
        a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
        b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
        den = np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1))
        return float(np.mean(np.divide((a * b).sum(1), den, out=np.zeros(len(a)), where=den > 0)))
    out = {"samples": _multilabel_samples(run, idx, target, prob) if run.multilabel else
           [{"test_index": int(i), "label": run.classes[int(run.labels[i])],
             "decision": run.classes[int(d)], "p": float(p.max())}
            for i, d, p in zip(idx, target, prob)],
           "gradcam_layer": layer_name,
           "embedding": {"method": embedding, "n": int(len(eidx)), **info},
           "map_agreement": {"gradcam_vs_saliency": corr(maps["gradcam"], maps["saliency"]),
                             "gradcam_vs_occlusion": corr(maps["gradcam"], maps["occlusion"])},
           "seconds": time.time() - t0}
    if run.multilabel:
        out |= decision_facts(run) | {"target_labels": list(dict.fromkeys(s["target"] for s in out["samples"]))}
    if plots:
        out["plots"] = {"panel": _panel(run, x, maps, out["samples"]),
                        "embedding": _embed_plot(run, xy, run.labels[eidx], embedding)}
    return out


def label_samples(run: ProbeRun, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A multi-label run's explained (test index, label) pairs: for each of the most prevalent
    labels, a seeded sample of the test images that have it (all images where none has)."""
    rng = np.random.default_rng(seed)
    labels = top_labels(run, min(TOP_LABELS, len(run.classes)))
    per = max(1, n_samples // max(len(labels), 1))
    idx, target = [], []
    for j in labels:
        pool = np.flatnonzero(run.labels[:, j] == 1)
        pool = pool if len(pool) else np.arange(len(run.labels))
        pick = np.sort(rng.choice(pool, min(per, len(pool)), replace=False))
        idx += pick.tolist()
        target += [j] * len(pick)
    return np.asarray(idx, dtype=np.int64), np.asarray(target, dtype=np.int64)


def _multilabel_samples(run: ProbeRun, idx: np.ndarray, target: np.ndarray, prob: np.ndarray) -> list[dict]:
    """Per explained (image, label): the label, the image's true value of it and the decision."""
    dec = decide(prob, run.task, run.threshold)
    return [{"test_index": int(i), "target": run.classes[int(t)], "y": int(run.labels[i, t]),
             "decision": int(dec[k, t]), "p": float(prob[k, t]),
             "positives": [c for c, v in zip(run.classes, run.labels[i]) if v]}
            for k, (i, t) in enumerate(zip(idx, target))]


def _row_label(s: dict) -> str:
    if "target" in s:  # multi-label: the explained label
        return f"#{s['test_index']} {s['target']}\ny={s['y']} → {s['decision']} ({s['p']:.2f})"
    return f"#{s['test_index']} y={s['label']}\n→{s['decision']} ({s['p']:.2f})"


def _panel(run: ProbeRun, x: torch.Tensor, maps: dict, samples: list) -> str:
    n = len(x)
    cols = ["image", "gradcam", "saliency", "occlusion"]
    fig = new_figure(1.9 * len(cols), 1.9 * n + 0.3)
    img = x[:, 0].numpy()
    for r in range(n):
        for c, name in enumerate(cols):
            ax = fig.add_subplot(n, len(cols), r * len(cols) + c + 1)
            ax.imshow(img[r], cmap="gray", vmin=0, vmax=1)
            if name != "image":
                ax.imshow(maps[name][r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(_row_label(samples[r]), fontsize=7)
    fig.tight_layout()
    write_png(run.probes_dir / "explain_panel.png", fig)
    return "explain_panel.png"


def _embed_plot(run: ProbeRun, xy: np.ndarray, labels: np.ndarray, method: str) -> str:
    fig = new_figure(4.2, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    groups = [(name, labels == k) for k, name in enumerate(run.classes)]
    if run.multilabel:
        j = top_labels(run, 1)[0]
        groups = [(f"no {run.classes[j]}", labels[:, j] == 0), (run.classes[j], labels[:, j] == 1)]
    for name, m in groups:
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.6, label=name)
    ax.set_title(f"penultimate features ({method.upper()})")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    write_png(run.probes_dir / "explain_embedding.png", fig)
    return "explain_embedding.png"


def explain_probe(run_dir: str | Path, *, force: bool = False, plots: bool = True, **params) -> dict:
    """Cached explanation probe (RUN/probes/explain.json and PNG panels)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    return cached_probe(run_dir, "explain", p, lambda run: compute_explain(run, plots=plots, **p), force=force)


# ------------------------------------------------------------------------------------ registration

def _record(e: dict, run) -> dict:
    plots = e.get("plots")
    return {"explain": {"gradcam_layer": e.get("gradcam_layer"), "map_agreement": e.get("map_agreement"),
                        "panel": str(run.probes_dir / plots["panel"]) if plots else None,
                        "embedding": str(run.probes_dir / plots["embedding"]) if plots else None}}


register(Probe(
    name="explain", order=40, run=explain_probe, defaults=DEFAULTS, sample_param=None,
    summary="Grad-CAM and integrated-gradients panels, their agreement, and an embedding of the test set",
    presets={"full": {"n_samples": 8, "n_embed": 2000}, "quick": {"n_samples": 4, "n_embed": 500}},
    record=_record, scalars=lambda rec: {}))
