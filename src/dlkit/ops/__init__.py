"""Detection operators (Notes: 002 §4, 000 §3.12): box formats and overlaps, NMS, the R-CNN box coder, anchors,
integral images and Haar-like features, RoI pooling and RoI align, the optimal assignment (Hungarian method),
multi-scale sliding windows, the Felzenszwalb-Huttenlocher over-segmentation and selective search proposals."""

from .anchors import AnchorGenerator, cell_anchors, grid_anchors, kmeans_anchors, wh_iou
from .assignment import linear_sum_assignment
from .box_coder import BoxCoder
from .boxes import (
    BOX_FORMATS,
    box_area,
    box_convert,
    box_inter_union,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    remove_small_boxes,
)
from .graph_segmentation import felzenszwalb
from .integral_image import HAAR_FEATURES, haar_feature, haar_positions, integral_image, rect_sum
from .multiscale_roi_align import MultiScaleRoIAlign, fpn_levels
from .nms import batched_nms, nms
from .roi import RoIAlign, RoIPool, roi_align, roi_pool
from .selective_search import SelectiveSearch, selective_search
from .sliding_windows import sliding_windows, window_count, window_scales

__all__ = [
    "AnchorGenerator", "BOX_FORMATS", "BoxCoder", "HAAR_FEATURES", "MultiScaleRoIAlign", "RoIAlign", "RoIPool",
    "batched_nms", "box_area", "box_convert", "box_inter_union", "box_iou", "cell_anchors", "clip_boxes_to_image",
    "fpn_levels", "generalized_box_iou", "grid_anchors", "haar_feature", "haar_positions", "integral_image",
    "kmeans_anchors", "linear_sum_assignment", "nms", "rect_sum", "remove_small_boxes", "roi_align", "roi_pool",
    "wh_iou",
    "SelectiveSearch", "felzenszwalb", "selective_search", "sliding_windows", "window_count", "window_scales",
]
