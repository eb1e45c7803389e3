from .focal import FocalLoss, sigmoid_focal_loss

__all__ = ["FocalLoss", "sigmoid_focal_loss"]
