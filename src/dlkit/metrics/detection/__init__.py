"""Detection metrics (Notes: 002 §4.1): COCO evaluation equal to pycocotools, VOC AP, precision-recall curves.

- coco_eval: the COCO evaluation on flat arrays (mAP@[.50:.95], AP50, AP75, AP by area, AR@{1,10,100});
- coco_json: reading COCO ground-truth and results files (one-line errors naming the field);
- coco_map: `COCOMeanAP`, the streaming metric for `DetectionTask(metric=...)`;
- voc_ap: TP/FP matching, precision-recall curves, VOC 11-point and all-point AP;
- mask_rle, mask_iou: COCO's RLE masks and polygon rasterisation, mask IoU for `segm`;
- proposal_recall: the recall of ground-truth boxes by the first N region proposals (002 §4.3.2).
"""

from .coco_eval import CocoAnnotations, CocoEvalResult, box_iou_xywh, coco_evaluate
from .coco_json import evaluate_coco_files, load_coco_ground_truth, load_coco_results
from .coco_map import COCOMeanAP
from .proposal_recall import proposal_recall
from .voc_ap import average_precision, match_detections, precision_recall_curve, voc_average_precision

__all__ = ["COCOMeanAP", "CocoAnnotations", "CocoEvalResult", "average_precision", "box_iou_xywh", "coco_evaluate",
           "evaluate_coco_files", "load_coco_ground_truth", "load_coco_results", "match_detections",
           "precision_recall_curve", "proposal_recall", "voc_average_precision"]
