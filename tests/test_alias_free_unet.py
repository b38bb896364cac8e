"""The alias-free UNet (genstudio.nets.AliasFreeUNet, preset "small_alias_free"): same parameters as the standard
UNet, its filtered resamplers in place, trains with any family, saves and loads through the checkpoint checks."""
import json
from pathlib import Path

import pytest
import torch

import genstudio
from genstudio.config import config_from_dict
from genstudio.core.resample import FilteredDown, FilteredUp
from genstudio.families import build_from_config
from genstudio.families.diffusion.interop import export_diffusers
from genstudio.nets import AliasFreeUNet, UNetBackbone, unet_config
from genstudio.train import run
from tests.helpers import MICRO_UNET, toy_config


def test_the_preset_is_the_small_unet_with_filtered_resampling_and_no_new_parameters():
    cfg = config_from_dict({"model": {"network": "small_alias_free", "num_classes": 10}, "objective": {"name": "edm"}})
    net = build_from_config(cfg)[0].network
    plain = UNetBackbone.from_config(unet_config("small", num_classes=10))
    assert type(net) is AliasFreeUNet and type(plain) is UNetBackbone
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(FilteredDown) == 2 and kinds.count(FilteredUp) == 2
    assert net.config["resample"] == "filtered"


def test_it_trains_exports_and_loads_identically(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=2, checkpoint_every=2)
    cfg["model"]["unet"] = {**MICRO_UNET, "resample": "filtered"}
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    result = run(config_from_dict(cfg))
    meta = json.loads((Path(result["model"]) / "genstudio.json").read_text())
    assert meta["components"] == {"unet": {"network": AliasFreeUNet.name}}
    pipe, again = genstudio.load(result["model"], device="cpu"), genstudio.load(result["model"], device="cpu")
    assert type(pipe.model.network) is AliasFreeUNet
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7])
    assert torch.equal(pipe.model(x, t), again.model(x, t))
    assert pipe.sample(2, sampler="euler", steps=2, labels=[0, 1]).shape == (2, 8, 8, 3)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="resample"):
        UNetBackbone.from_config(unet_config("tiny", resample="sinc"))
    with pytest.raises(ValueError, match="SkipDownBlock2D|FirDownsample"):
        UNetBackbone.from_config(unet_config("tiny", resample="filtered", down_block_types=("SkipDownBlock2D",) * 3,
                                             up_block_types=("SkipUpBlock2D",) * 3))
    model = {"network": "tiny", "unet": {"resample": "filtered"}, "path": {"name": "vp_discrete"}, "prediction": "eps",
             "precond": {"name": "none"}}
    cfg = config_from_dict({"model": model, "objective": {"name": "ddpm"}})
    with pytest.raises(ValueError, match="not a diffusers UNet2DModel"):
        export_diffusers(build_from_config(cfg)[0], "unused")
