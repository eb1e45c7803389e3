"""retinanet-raccoon (Notes: 002 §4.3.4, 003 §3.3.2): the ImageNet-pretrained run, then the same network from
scratch as the comparison in its report."""

import json

from safetensors.torch import load_file

from dlkit.nn.frozen_batchnorm import FrozenBatchNorm2d
from dlkit.recipes import run_recipe, runner


def test_the_raccoon_report_compares_the_pretrained_run_with_the_same_network_from_scratch(tmp_path, data_root,
                                                                                          monkeypatch):
    trained = []
    fit = runner.fit
    monkeypatch.setattr(runner, "fit", lambda task, *a, **kw: trained.append(task.model) or fit(task, *a, **kw))
    summary = run_recipe("retinanet-raccoon", smoke=True, out=tmp_path / "a", data_dir=str(data_root))
    finals = json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"]
    assert 0 <= finals["scratch/map_50"] <= 1 and 0 <= finals["test/map_50"] <= 1 and summary["value"] is not None
    assert (tmp_path / "a" / "figures" / "pretrained_vs_scratch.png").is_file()
    assert "scratch/map_50" in (tmp_path / "a" / "report.html").read_text()
    # the same network: every tensor of the pretrained run has its twin, but no batch norm is frozen from scratch
    (scratch,) = trained
    main = load_file(str(tmp_path / "a" / "model.safetensors"))
    ours = scratch.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items() if k in main} == {k: tuple(v.shape) for k, v in main.items()}
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in scratch.modules())
    run_recipe("retinanet-raccoon", smoke=True, out=tmp_path / "b", data_dir=str(data_root),
               overrides={"compare_scratch": False})
    finals = json.loads((tmp_path / "b" / "summary.json").read_text())["metrics"]
    assert "test/map_50" in finals and not any(k.startswith("scratch/") for k in finals)
    assert len(trained) == 1
