"""Properties every model in the zoo must have, checked on tiny inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distributed_adcs.models import MODELS, AdcsModel, build_model, capture_activations, capture_penultimate

# (in_channels, image_size, mean, std): Fashion-MNIST-like and CIFAR-like inputs.
CIFAR_MEAN, CIFAR_STD = [0.491, 0.482, 0.447], [0.247, 0.243, 0.262]
SHAPES = {
    "gray28": (1, 28, [0.286], [0.353]),
    "rgb32": (3, 32, CIFAR_MEAN, CIFAR_STD),
}
NUM_CLASSES = 7  # not 10, so a hard-coded class count would show
BATCH = 3


def make(name: str, shape: str = "rgb32", **params: int) -> AdcsModel:
    channels, image_size, mean, std = SHAPES[shape]
    if name == "wide_resnet":
        params = {"depth": 10, "width": 1} | params  # a tiny Wide ResNet unless asked otherwise
    return build_model(name, num_classes=NUM_CLASSES, in_channels=channels, image_size=image_size,
                       mean=mean, std=std, **params)


def images(shape: str = "rgb32", batch: int = BATCH) -> torch.Tensor:
    channels, image_size, _, _ = SHAPES[shape]
    return torch.rand(batch, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_builds_and_gives_logits(name: str, shape: str) -> None:
    model = make(name, shape)
    assert isinstance(model, AdcsModel)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == NUM_CLASSES
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for train in (True, False):
        out = model.train(train)(images(shape))
        assert out.shape == (BATCH, NUM_CLASSES)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_normalisation_is_applied_first_inside_the_model(name: str) -> None:
    model = make(name).eval()
    bare = copy.deepcopy(model)
    bare.normalize.mean.zero_()
    bare.normalize.std.fill_(1.0)
    x = images()
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = bare((x - mean) / std)
        torch.testing.assert_close(model(x), expected)
        # Guards against a vacuous pass: normalisation must change the output.
        assert not torch.allclose(bare(x), expected, atol=1e-3)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_capture_penultimate_reproduces_logits(name: str) -> None:
    model = make(name).eval()
    with torch.no_grad(), capture_penultimate(model) as pen:
        logits = model(images())
        features = pen.features
        assert features is not None and features.shape == (BATCH, model.head.in_features)
        assert torch.equal(model.head(features), logits)
        model(images(batch=2))  # a second forward overwrites the features
        assert pen.features.shape[0] == 2
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_perceptual_modules_run_in_forward(name: str) -> None:
    model = make(name, "gray28").eval()
    modules = model.perceptual_modules()
    assert len(modules) >= 2
    owned = {id(m) for m in model.modules()}
    assert all(id(m) in owned for m in modules)
    with torch.no_grad(), capture_activations(model, modules) as acts:
        model(images("gray28"))
        assert len(acts) == len(modules)
        assert all(isinstance(a, torch.Tensor) and a.shape[0] == BATCH for a in acts)
        first = list(acts)
        model(images("gray28", batch=2))  # each forward refills every slot
        assert all(a.shape[0] == 2 for a in acts)
        assert all(a.shape[0] == BATCH for a in first)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_perceptual_activations_are_not_modified_in_place(name: str) -> None:
    # capture_activations keeps the raw outputs; a later in-place op (e.g. ReLU(inplace=True))
    # would silently change them. Tensor._version counts in-place writes.
    model = make(name, "gray28").eval()
    seen: list[tuple[torch.Tensor, int]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append((out, out._version)))
               for m in model.perceptual_modules()]
    with torch.no_grad():
        model(images("gray28"))
    for handle in handles:
        handle.remove()
    assert len(seen) == len(model.perceptual_modules())
    assert all(out._version == version for out, version in seen)


def test_hooks_are_removed_when_the_block_raises() -> None:
    model = make("small_cnn")
    with pytest.raises(RuntimeError, match="boom"):
        with capture_penultimate(model), capture_activations(model, model.perceptual_modules()):
            assert hook_count(model) > 0
            raise RuntimeError("boom")
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_reaches_the_input(name: str) -> None:
    model = make(name).train()
    x = images().requires_grad_(True)
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().flatten(1).sum(1) > 0).all()  # every example gets a gradient


@pytest.mark.parametrize(("depth", "params"), [(28, 36_479_194), (34, 46_160_474)])
def test_wide_resnet_parameter_counts(depth: int, params: int) -> None:
    # The published WRN-28-10 and WRN-34-10 for 10 classes (36.5M and 46.2M).
    # Built on the meta device: shapes only, no memory and no forward.
    with torch.device("meta"):
        model = build_model("wide_resnet", num_classes=10, in_channels=3, image_size=32,
                            mean=[0.5] * 3, std=[0.25] * 3, depth=depth, width=10)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet18_parameter_count() -> None:
    with torch.device("meta"):
        model = make("resnet18")
    # 11,173,962 for 10 classes; 3 fewer classes remove 3 * (512 + 1) weights.
    assert sum(p.numel() for p in model.parameters()) == 11_173_962 - 3 * 513


@pytest.mark.parametrize("depth", [4, 9, 12, 27, 29])
def test_wide_resnet_rejects_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        make("wide_resnet", depth=depth)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        make("resnet9000")
    assert all(name in str(info.value) for name in MODELS)


def test_parameters_belong_to_their_model() -> None:
    with pytest.raises(ValueError, match="depth"):  # small_cnn has no depth of its own
        make("small_cnn", depth=10)


@pytest.mark.parametrize(("mean", "std"), [([0.5], [0.2, 0.2, 0.2]), ([0.5] * 3, [0.2, 0.0, 0.2])])
def test_bad_normalisation_is_rejected(mean: list[float], std: list[float]) -> None:
    with pytest.raises(ValueError):
        build_model("small_cnn", num_classes=10, in_channels=3, image_size=32, mean=mean, std=std)


def test_pass_counter_counts_examples_forward_and_backward():
    from distributed_adcs.models import PassCounter
    from tiny_models import make_data, make_model as tiny

    model = tiny()
    x, y = make_data(6)
    counter = PassCounter(model)
    with torch.no_grad():
        model(x)
    assert counter.state() == {"passes_forward": 6, "passes_backward": 0}
    model(x[:4]).sum().backward()
    xa = x.clone().requires_grad_(True)
    torch.autograd.grad(model(xa).sum(), xa)  # an attack step: gradient w.r.t. the input
    assert counter.state() == {"passes_forward": 16, "passes_backward": 10}
    counter.detach()
    model(x)
    assert counter.forward == 16
