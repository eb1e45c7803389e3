"""The notes' Table 4.1 (Notes: 002 §4.3.2): conv and FF FLOPs of R-CNN, Fast R-CNN and Faster R-CNN on AlexNet,
counted by running dlkit's models, against the layer arithmetic by hand and the notes' rounded numbers
(R-CNN n x 2154 M conv and n x 117 M FF per proposal; Fast R-CNN 16,310 M conv once per image)."""

import pytest
import torch

from dlkit import create_model
from dlkit.cli import main
from dlkit.report.detection_cost import detection_cost, faster_rcnn_cost, format_cost_table


def conv_macs_and_outputs(h: int, w: int) -> tuple[int, int]:
    """AlexNet as published (96-256-384-384-256, conv1 11x11/4 unpadded, 3x3/2 max-pools) by hand: multiply-adds
    K K D_in D_out O_h O_w and biased outputs D_out O_h O_w of conv1-conv5 on an h x w image."""
    h, w = (h - 11) // 4 + 1, (w - 11) // 4 + 1
    macs, outs = h * w * 96 * 11 * 11 * 3, h * w * 96
    h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    macs, outs = macs + h * w * 256 * 5 * 5 * 96, outs + h * w * 256
    h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    macs += h * w * 9 * (256 * 384 + 384 * 384 + 384 * 256)
    return macs, outs + h * w * (384 + 384 + 256)


FC_MACS = 256 * 6 * 6 * 4096 + 4096 * 4096 + 4096 * 1001  # fc6, fc7 and 1000 classes + background


@pytest.fixture(scope="module")
def costs():
    """The ImageNet-sized detectors (1000 classes, as the notes' table counts AlexNet's fc8) at 604 x 604."""
    torch.manual_seed(0)
    rcnn = create_model("rcnn_alexnet", num_classes=1000)
    fast = create_model("fast_rcnn_alexnet", num_classes=1000)
    return (detection_cost(rcnn, (3, 604, 604), "rcnn_alexnet"), detection_cost(fast, (3, 604, 604)),
            faster_rcnn_cost(fast, (3, 604, 604)))


def test_rcnn_costs_the_notes_2154_m_conv_and_117_m_ff_per_proposal(costs):
    rcnn = costs[0]
    macs, outs = conv_macs_and_outputs(227, 227)
    assert macs == 1_076_634_144
    assert rcnn.region["conv"] == 2 * macs + outs and round(rcnn.region["conv"] / 1e6) == 2154
    assert rcnn.region["FF"] == 2 * FC_MACS + 4096 + 4096 + 1001 and round(rcnn.region["FF"] / 1e6) == 117
    assert rcnn.image["conv"] == rcnn.image["FF"] == 0  # nothing is shared between the proposals
    assert rcnn.region["box"] == 2 * 4096 * 4004 + 4004  # the box corrections, which the notes' table leaves out
    assert rcnn.total(2000) == pytest.approx(2000 * (2153.9e6 + 117.3e6 + 32.8e6), rel=1e-3)


def test_fast_rcnn_shares_the_convolutions_and_faster_rcnn_adds_the_rpn(costs):
    _, fast, faster = costs
    macs, outs = conv_macs_and_outputs(604, 604)
    assert fast.image["conv"] == 2 * macs + outs and fast.region["conv"] == 0
    assert fast.image["conv"] == pytest.approx(16_310e6, rel=5e-4)  # the notes' 16,310 M: within 0.03%
    assert fast.region["FF"] == costs[0].region["FF"]  # the same fc6 (RoI pool 6 x 6 x 256), fc7 and classes
    side = 36  # conv5's map at 604: 149 -> 74 -> 36
    rpn = 2 * side * side * (256 * 256 * 9 + 256 * 9 + 256 * 36) + side * side * (256 + 9 + 36)
    assert faster.image["conv"] - fast.image["conv"] == rpn and faster.region == fast.region


def test_table_and_cli(capsys):
    small = [detection_cost(create_model("rcnn_tiny"), (3, 96, 96), "rcnn_tiny")]
    table = format_cost_table(small, 100)
    assert "n x 10 M" in table.splitlines()[4] and "total (n = 100)" in table
    assert main(["summary", "--compare", "rcnn_tiny,fast_rcnn_tiny", "--proposals", "50"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[4:7]] == ["rcnn_tiny", "fast_rcnn_tiny", "Faster"]
    assert main(["summary"]) != 0 and "--compare" in capsys.readouterr().err
