"""Loading external LPIPS backbones from local state-dict files (no download, no pickled code)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from distributed_adcs.attacks import load_backbone

_RAN: list[str] = []


def _mark_ran() -> None:
    _RAN.append("code from the weights file ran")


class _Payload:
    """Unpickling this calls ``_mark_ran``: what a malicious weights file could do."""

    def __reduce__(self):
        return (_mark_ran, ())


def _features_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of torchvision's ``name().features`` (built without the classifier)."""
    with torch.device("meta"):
        features = getattr(torchvision.models, name)(weights=None).features
    features = features.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in features.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return features.state_dict()


def test_full_network_state_dict_keeps_only_the_features(tmp_path: Path) -> None:
    feats = _features_state("alexnet")
    full = {f"features.{k}": v for k, v in feats.items()}
    full["classifier.1.weight"] = torch.zeros(7, 3)  # ignored, whatever its shape
    full["classifier.1.bias"] = torch.zeros(7)
    path = tmp_path / "alexnet_full.pt"
    torch.save(full, path)
    backbone = load_backbone(path)
    loaded = backbone.features.state_dict()
    assert set(loaded) == set(feats)
    assert all(torch.equal(loaded[k], feats[k]) for k in feats)
    assert len(backbone.perceptual_modules()) == 5


def test_vgg16_features_are_recognised(tmp_path: Path) -> None:
    feats = _features_state("vgg16", seed=1)
    path = tmp_path / "vgg16_features.pt"
    torch.save(feats, path)
    backbone = load_backbone(path)
    assert torch.equal(backbone.features[0].weight, feats["0.weight"])
    assert [type(m).__name__ for m in backbone.perceptual_modules()] == ["ReLU"] * 5
    assert len(backbone.features) == 30  # up to relu5_3, the last compared layer
    out = backbone(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape[1] == 512


def test_weights_files_are_loaded_without_running_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"features.0.weight": _Payload()}, path)
    _RAN.clear()
    with pytest.raises(pickle.UnpicklingError):
        load_backbone(path)
    assert _RAN == []


def test_backbone_is_frozen_normalises_and_keeps_activations_intact(tmp_path: Path) -> None:
    path = tmp_path / "alexnet_features.pt"
    torch.save(_features_state("alexnet", seed=2), path)
    backbone = load_backbone(path)
    assert not backbone.training
    assert all(not p.requires_grad for p in backbone.parameters())
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), backbone.features((x - mean) / std), rtol=0, atol=0)
    # a hook on any layer sees that layer's own output: no later layer overwrites it in place
    kept = []
    backbone.features[0].register_forward_hook(lambda _m, _i, out: kept.append(out))
    with torch.no_grad():
        backbone(x)
        conv = backbone.features[0](((x - mean) / std))
    assert bool((kept[0] < 0).any())
    torch.testing.assert_close(kept[0], conv, rtol=0, atol=0)
