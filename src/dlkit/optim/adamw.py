"""AdamW: Adam with weight decay decoupled from the gradient (Notes: 002 §1.4.4; Loshchilov & Hutter, 2019).

The decay shrinks the weights directly instead of entering the moving averages, so every weight decays at
the same relative rate whatever its gradient history. The notes write the decay as `- lambda theta`, not
multiplied by the learning rate (`form="notes"`); torch.optim.AdamW (the default, `form="torch"`) multiplies it
by lr, `theta <- theta (1 - lr wd)`, so `lambda_notes = lr * wd_torch` and a schedule on lr also schedules the decay.
"""

from __future__ import annotations

from ._common import check
from .adam import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay.

    Notes: 002 §1.4.4. `theta <- theta - lr m^ / (sqrt(s^) + eps) - lambda theta` with `lambda = lr * wd`
    (form 'torch', the default) or `lambda = wd` (form 'notes'); m^, s^ as in Adam, computed from the plain gradient.
    The decay comes first, `theta <- (1 - lambda) theta`, then the Adam step, as in torch.optim.AdamW. `impl` as in
    Adam ("auto", "compiled", "foreach", "reference", "fused").
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, impl: str = "auto", form: str = "torch"):
        check(form in ("torch", "notes"), "AdamW form", "'torch' (decay lr * wd) or 'notes' (decay wd)", form)
        if form == "notes":
            check(weight_decay < 1, "AdamW(form='notes') weight_decay", "< 1 (theta <- (1 - wd) theta)", weight_decay,
                  "The notes' decay is not multiplied by lr, so use a small value such as lr * 1e-2.")
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach,
                         fused=fused, impl=impl, decoupled_weight_decay=True)
        self.defaults["form"] = form
        for group in self.param_groups:
            group.setdefault("form", form)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

    def _decay(self, group: dict) -> str:
        return "notes" if group.get("form") == "notes" else "decoupled"
