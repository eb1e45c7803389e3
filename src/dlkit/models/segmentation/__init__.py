"""Semantic segmentation networks: FCN-32s/16s/8s, U-Net, DeepLab v3 / v3+ (Notes: 000 §3.11, 002 §5.1, 003 §4)."""
