"""Fine-tuning a pretrained classifier: frozen layers left out of the optimizer, lower learning rates for the
pretrained layers (Notes: 003 §3.3.2 "lower learning rates are used in fine tuning", 000 §3.6)."""

from __future__ import annotations

from collections.abc import Mapping

from ..techniques.transfer import param_groups
from .classification import ClassificationTask
from .optimization import build_optimizers, optimizer_options


class FineTuningTask(ClassificationTask):
    """A ClassificationTask whose optimizer gets only the trainable parameters (requires_grad; see
    `techniques.transfer.freeze`), and gives those matching a pattern of `lr_rules` ({pattern: lr}) their own
    learning rate, the rest `cfg.lr` (see `techniques.transfer.param_groups`)."""

    def __init__(self, model, cfg, lr_rules: Mapping[str, float] | None = None, **kw):
        super().__init__(model, cfg, **kw)
        self.lr_rules = dict(lr_rules or {})

    def configure_optimizers(self, plan):
        if self.lr_rules:
            params = param_groups(self.model, self.lr_rules, default_lr=optimizer_options(self.cfg).lr)
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        return build_optimizers(params, self.cfg, plan)
