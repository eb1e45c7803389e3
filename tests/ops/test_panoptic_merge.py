"""Panoptic FPN merge (Notes: 002 §5.3.1: things take priority over stuff) on hand-worked examples."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.metrics.panoptic import PanopticQuality
from dlkit.ops.panoptic_merge import panoptic_merge


def _cols(*cols, h=4, w=8):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:, list(cols)] = True
    return m


def _scene():
    # 4 x 8 image. A (0.9, car=1) on cols 0-2; B (0.8, person=2) on cols 2-4, overlapping A on col 2 (4 of 12 px,
    # 1/3 < 0.5): pasted on its free cols 3-4; C (0.7, car) on cols 1-3 is wholly taken: dropped; D (0.3, person) on
    # cols 5-6 is below the score threshold. They are passed out of score order: C, D, B, A.
    masks = torch.stack([_cols(1, 2, 3), _cols(5, 6), _cols(2, 3, 4), _cols(0, 1, 2)])
    scores, labels = torch.tensor([0.7, 0.3, 0.8, 0.9]), torch.tensor([1, 2, 2, 1])
    # semantic: sky (0) on cols 0-6 but pixel (0, 6) predicted car (a thing class: never stuff), grass (3) on col 7.
    semantic = torch.zeros(4, 8, dtype=torch.long)
    semantic[0, 6], semantic[:, 7] = 1, 3
    return masks, scores, labels, semantic


def test_score_order_overlap_stuff_fill_and_small_stuff_removal():
    masks, scores, labels, semantic = _scene()
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, stuff_categories=(0, 3), stuff_area_threshold=5)
    # sky keeps the 7 free px of cols 5-6 (id 3); grass keeps 4 px < 5: void; (0, 6) is a thing class: void.
    row = [1, 1, 1, 2, 2, 3, 3, 0]
    assert id_map.tolist() == [[1, 1, 1, 2, 2, 3, 0, 0]] + [row] * 3
    assert [(s["id"], s["category"], s["isthing"], s["area"]) for s in segs] == [
        (1, 1, True, 12), (2, 2, True, 8), (3, 0, False, 7)]
    assert segs[0]["score"] == pytest.approx(0.9) and segs[1]["score"] == pytest.approx(0.8)
    # a lower area threshold keeps the grass
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, stuff_categories=(0, 3), stuff_area_threshold=4)
    assert id_map[:, 7].tolist() == [4] * 4 and segs[-1]["category"] == 3
    # the merged prediction scored against itself as ground truth is perfect
    m = PanopticQuality(4, thing_categories=(1, 2))
    m.update((id_map, segs), (id_map.clone(), segs))
    assert m.compute()["pq"] == 1.0


def test_things_override_stuff():
    masks, scores, labels, semantic = _scene()
    semantic[:] = 0  # sky everywhere: every instance pixel still belongs to the instance
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, stuff_categories=(0,), stuff_area_threshold=1)
    assert (id_map[:, :5] != 3).all() and (id_map[:, 5:] == 3).all() and segs[2]["area"] == 12


def test_overlap_threshold_is_strict_and_min_instance_area():
    # E (0.9) on cols 0-1, F (0.8) on cols 1-2: F's overlap is 4 / 8 = 0.5 exactly
    masks = torch.stack([_cols(0, 1), _cols(1, 2)]).float() * 0.7  # probabilities: 0.7 > 0.5 is inside
    scores, labels, semantic = torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), torch.zeros(4, 8, dtype=torch.long)
    kw = {"stuff_categories": (), "stuff_area_threshold": 1}
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, overlap_threshold=0.5, **kw)
    assert len(segs) == 1 and int((id_map == 1).sum()) == 8  # overlap must be < 0.5: F dropped
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, overlap_threshold=0.6, **kw)
    assert len(segs) == 2 and id_map[:, 2].tolist() == [2] * 4 and segs[1]["area"] == 4
    id_map, segs = panoptic_merge(masks, scores, labels, semantic, overlap_threshold=0.6, min_instance_area=5, **kw)
    assert len(segs) == 1  # only 4 free px remain for F
    logits = torch.zeros(2, 4, 8)
    logits[1, :, 3:] = 1.0  # semantic as logits: class 1 on cols 3-7
    id_map, segs = panoptic_merge(masks, scores, labels.new_tensor([2, 2]), logits, stuff_categories=(1,),
                                  stuff_area_threshold=1)
    assert id_map[:, 3:].unique().tolist() == [2] and segs[-1]["area"] == 20


def test_bad_inputs_raise_config_error():
    masks, scores, labels, semantic = _scene()
    with pytest.raises(ConfigError, match="one score and one label"):
        panoptic_merge(masks, scores[:2], labels, semantic, (0,))
    with pytest.raises(ConfigError, match=r"\[K, H, W\]"):
        panoptic_merge(masks[:, :2], scores, labels, semantic, (0,))
    with pytest.raises(ConfigError, match="stuff categories"):
        panoptic_merge(masks, scores, labels, semantic, (0, 1))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        panoptic_merge(masks, scores, labels, semantic, (0,), overlap_threshold=1.5)
