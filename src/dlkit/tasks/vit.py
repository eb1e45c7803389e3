"""Vision Transformer classification: the classification task with the ViT analyses of the notes added to the
report (Notes: 002 §3.2, Fig. 3.9 and 3.10; 004 VISUAL TRANSFORMERS).

The contract is classification's (logits [N, classes]); the model must be a `VisionTransformer` (`pos_embed`,
`grid`, `patch_size`, `attention_maps`).
"""

from __future__ import annotations

from pathlib import Path

from ..models.classification.vit import mean_attention_distance, position_embedding_similarity
from ..report.figures import plot_image_grid, plot_lines
from .classification import ClassificationTask


class ViTClassificationTask(ClassificationTask):
    """Classification of a `VisionTransformer`, with the ViT figures of 002 §3.2 added to the report: the cosine
    similarity of the learned position embeddings (Fig. 3.9) and the mean attention distance of every head
    (Fig. 3.10)."""

    def figures(self, run_dir: Path, model, loader) -> list[Path]:
        paths = super().figures(run_dir, model, loader)
        figs, grid = run_dir / "figures", model.grid
        sim = position_embedding_similarity(model.pos_embed.weight[1:].detach().float().cpu())  # no [CLS]
        titles = [f"patch ({r}, {c})" for r in range(grid) for c in range(grid)]
        paths.append(plot_image_grid(list(sim.reshape(grid * grid, grid, grid)), figs / "position_similarity.png",
                                     titles=titles, ncols=grid))
        if loader is not None:
            x, _ = next(iter(loader))
            x = x[:256].to(next(model.parameters()).device)
            curves = {}
            for layer, attn in enumerate(model.attention_maps(x)):
                a = attn[:, :, 1:, 1:].float().cpu()  # patch-to-patch weights, renormalised without [CLS]
                a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
                dist = mean_attention_distance(a, grid, model.patch_size).mean(0)  # [heads]
                for h, d in enumerate(dist.tolist()):
                    xs, ys = curves.setdefault(f"head {h}", ([], []))
                    xs.append(layer + 1)
                    ys.append(d)
            paths.append(plot_lines(curves, figs / "mean_attention_distance.png", "layer",
                                    "mean attention distance (pixels)",
                                    title="how far each head looks (002 Fig. 3.10)"))
        return paths
