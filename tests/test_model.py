"""Tests for chh_lib.model: architecture, shapes, registry and weight import."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from chh_lib.model import (
    MODEL_REGISTRY,
    ResNet34Encoder,
    UnetResNet34,
    UnetSmall,
    adapt_resnet34_state_dict,
    build_model,
    count_parameters,
    input_multiple,
    load_torchvision_resnet34_weights,
)

PAPER_PARAMETER_COUNT = 24_447_027
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def expected_resnet34_keys() -> list[str]:
    """torchvision resnet34 state-dict keys without ``fc.*``, in module order."""

    def bn(prefix: str) -> list[str]:
        return [
            f"{prefix}.{name}"
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ]

    keys = ["conv1.weight", *bn("bn1")]
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            keys += [f"{prefix}.conv1.weight", *bn(f"{prefix}.bn1")]
            keys += [f"{prefix}.conv2.weight", *bn(f"{prefix}.bn2")]
            if layer > 1 and block == 0:
                keys += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
    return keys


@pytest.fixture(scope="module")
def paper_model() -> UnetResNet34:
    torch.manual_seed(0)
    return build_model("unet_resnet34", num_landmarks=19, in_channels=1)


def test_paper_configuration_parameter_count(paper_model: UnetResNet34) -> None:
    assert count_parameters(paper_model) == PAPER_PARAMETER_COUNT


def test_resnet34_output_shape_and_attributes(paper_model: UnetResNet34) -> None:
    paper_model.eval()
    with torch.no_grad():
        out = paper_model(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 19, 64, 64)
    assert out.dtype == torch.float32
    assert paper_model.num_landmarks == 19
    assert paper_model.in_channels == 1


def test_resnet34_non_square_and_rgb() -> None:
    model = build_model("unet_resnet34", num_landmarks=3, in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)


def test_encoder_keys_match_torchvision(paper_model: UnetResNet34) -> None:
    assert list(paper_model.encoder.state_dict()) == expected_resnet34_keys()
    model_keys = [k for k in paper_model.state_dict() if k.startswith("encoder.")]
    assert model_keys == [f"encoder.{k}" for k in expected_resnet34_keys()]


def test_encoder_feature_shapes() -> None:
    encoder = ResNet34Encoder(in_channels=1).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 1, 64, 96))
    shapes = [tuple(f.shape) for f in features]
    assert shapes == [
        (1, 1, 64, 96),
        (1, 64, 32, 48),
        (1, 64, 16, 24),
        (1, 128, 8, 12),
        (1, 256, 4, 6),
        (1, 512, 2, 3),
    ]
    assert encoder.out_channels == tuple(s[1] for s in shapes)


def _fake_torchvision_state_dict(encoder: ResNet34Encoder) -> dict[str, torch.Tensor]:
    """A torchvision-style resnet34 state dict: 3-channel conv1 and an fc layer."""
    generator = torch.Generator().manual_seed(1)
    fake = {}
    for key, value in encoder.state_dict().items():
        shape = (64, 3, 7, 7) if key == "conv1.weight" else value.shape
        if value.dtype == torch.long:
            fake[key] = torch.full(shape, 7, dtype=torch.long)
        else:
            fake[key] = torch.rand(shape, generator=generator)
    fake["fc.weight"] = torch.randn(1000, 512, generator=generator)
    fake["fc.bias"] = torch.randn(1000, generator=generator)
    return fake


def test_adapt_state_dict_loads_strictly_one_channel() -> None:
    model = UnetResNet34(num_landmarks=19, in_channels=1)
    fake = _fake_torchvision_state_dict(model.encoder)
    adapted = adapt_resnet34_state_dict(fake, in_channels=1)
    assert not any(k.startswith("fc.") for k in adapted)
    assert fake["conv1.weight"].shape == (64, 3, 7, 7)  # input untouched
    model.encoder.load_state_dict(adapted, strict=True)
    loaded = model.state_dict()
    torch.testing.assert_close(
        loaded["encoder.conv1.weight"], fake["conv1.weight"].sum(dim=1, keepdim=True)
    )
    torch.testing.assert_close(
        loaded["encoder.layer3.0.downsample.1.running_var"],
        fake["layer3.0.downsample.1.running_var"],
    )


@pytest.mark.parametrize("in_channels", [2, 3, 4])
def test_adapt_state_dict_other_channel_counts(in_channels: int) -> None:
    encoder = ResNet34Encoder(in_channels=in_channels)
    fake = _fake_torchvision_state_dict(encoder)
    adapted = adapt_resnet34_state_dict(fake, in_channels=in_channels)
    encoder.load_state_dict(adapted, strict=True)
    assert adapted["conv1.weight"].shape == (64, in_channels, 7, 7)
    rgb = fake["conv1.weight"]
    expected = torch.stack([rgb[:, c % 3] for c in range(in_channels)], dim=1) * (3 / in_channels)
    torch.testing.assert_close(adapted["conv1.weight"], expected)


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed")
def test_load_pretrained_without_torchvision_raises() -> None:
    model = UnetResNet34(num_landmarks=2)
    with pytest.raises(ImportError, match=r"chh-kit\[pretrained\]"):
        load_torchvision_resnet34_weights(model)


def test_load_pretrained_rejects_other_models() -> None:
    with pytest.raises(TypeError):
        load_torchvision_resnet34_weights(UnetSmall(num_landmarks=2))


def test_unet_small_shape_and_size() -> None:
    model = build_model("unet_small", num_landmarks=19).eval()
    assert count_parameters(model) < 2_000_000
    assert model.num_landmarks == 19 and model.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 96)).shape == (2, 19, 64, 96)
        # The CPU training size, whose height is not a multiple of 32.
        assert model(torch.randn(1, 1, 200, 160)).shape == (1, 19, 200, 160)


def test_unet_small_width_multiplier() -> None:
    narrow = build_model("unet_small", num_landmarks=19, width_multiplier=0.5)
    assert count_parameters(narrow) < count_parameters(build_model("unet_small", 19))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unet_resnet34"):
        build_model("__import__('os')", num_landmarks=19)
    with pytest.raises(ValueError, match="unet_small"):
        input_multiple("resnet")


def test_registry_and_input_multiple() -> None:
    assert set(MODEL_REGISTRY) == {"unet_resnet34", "unet_small"}
    assert input_multiple("unet_resnet34") == 32
    assert 160 % input_multiple("unet_small") == 0 and 200 % input_multiple("unet_small") == 0


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 64, 48), (1, 1, 40, 64), (1, 2, 64, 64), (1, 64, 64)],
    ids=["bad-width", "bad-height", "bad-channels", "3d"],
)
def test_wrong_input_raises(paper_model: UnetResNet34, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        paper_model(torch.randn(*shape))


def test_unet_small_too_small_input_raises() -> None:
    with pytest.raises(ValueError, match="at least"):
        build_model("unet_small", num_landmarks=2)(torch.randn(1, 1, 16, 64))


def test_unet_small_learns() -> None:
    torch.manual_seed(0)
    model = build_model("unet_small", num_landmarks=2)
    x = torch.randn(2, 1, 64, 64)
    target = torch.rand(2, 2, 64, 64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        losses.append(loss.item())
        optimiser.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["unet_small", "unet_resnet34"])
def test_eval_mode_is_deterministic(name: str) -> None:
    model = build_model(name, num_landmarks=4).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = model(x[:1])
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # Batch composition changes only float rounding (different conv kernels).
    scale = first.abs().max().item()
    torch.testing.assert_close(alone, first[:1], rtol=0, atol=1e-4 * scale)
