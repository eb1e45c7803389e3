"""One step of gradient descent on a computed loss: clear the gradients, backpropagate, clip, update, schedule.

Notes: 000 §2.2 (w <- w - eta dL/dw, gradients by backpropagation); clipping the global gradient norm is the
usual remedy for the exploding gradients of 003 §2.4 and 004 RNN (the notes do not name it). The Trainer has
its own loop; recipes that train with a loop of their own (language models, seq2seq, BERT, transfer learning)
take each step through `gradient_step`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gradient_step(loss: Tensor, optimizer: torch.optim.Optimizer, clip_norm: float | None = None,
                  scheduler=None) -> Tensor:
    """zero_grad, `loss.backward()`, clip the global gradient norm of the optimizer's parameters to `clip_norm`
    (when given), `optimizer.step()` and `scheduler.step()` (when given). Returns the detached loss; nothing
    is read on the host, so the step does not synchronise with an accelerator."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()
