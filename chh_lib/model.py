"""Heatmap regression networks.

Two U-Nets map an image batch of shape ``(N, C_in, H, W)`` to one logit map
per landmark, shape ``(N, K, H, W)``, at full input resolution:

``unet_resnet34``
    The authors' configuration: a U-Net with a ResNet-34 encoder, identical
    in structure and parameter names to segmentation_models_pytorch's
    ``smp.Unet(encoder_name="resnet34", decoder_channels=(256, 128, 64, 32, 32))``
    (24,447,027 parameters for one input channel and 19 landmarks). The
    encoder's parameter names follow torchvision's ``resnet34`` under an
    ``encoder.`` prefix, so ImageNet weights can be imported with
    :func:`load_torchvision_resnet34_weights`. H and W must be multiples of 32.

``unet_small``
    A compact U-Net (about 1.4 M parameters at the default width) meant for
    training on a CPU at about 160 x 200 pixels. It accepts any H and W of at
    least 32 pixels.

Use :func:`build_model` to construct either by name.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODEL_REGISTRY",
    "BasicBlock",
    "ResNet34Encoder",
    "UnetDecoderBlock",
    "UnetResNet34",
    "UnetSmall",
    "adapt_resnet34_state_dict",
    "build_model",
    "count_parameters",
    "input_multiple",
    "load_torchvision_resnet34_weights",
    "unet_resnet34",
    "unet_small",
]

#: Blocks per stage of ResNet-34.
RESNET34_LAYERS = (3, 4, 6, 3)
#: Output channels of ResNet-34's stem and four stages.
RESNET34_CHANNELS = (64, 64, 128, 256, 512)
#: Decoder widths of the paper's configuration, deepest block first.
PAPER_DECODER_CHANNELS = (256, 128, 64, 32, 32)


def _check_input(x: torch.Tensor, in_channels: int, multiple: int, min_size: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, H, W)`` with valid H and W."""
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"input height and width must be multiples of {multiple}, got H={height}, W={width}; "
            "resize or pad the image first"
        )
    if height < min_size or width < min_size:
        raise ValueError(
            f"input height and width must be at least {min_size}, got H={height}, W={width}"
        )


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (no bias), batch norm and ReLU, as ``Sequential(conv, bn, relu)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------------- ResNet-34


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with an identity shortcut.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and output.
    stride : int
        Stride of the first convolution. When it is not 1, or the channel count
        changes, the shortcut is a strided 1x1 convolution with batch norm
        (``downsample``), as in torchvision.

    Notes
    -----
    Input ``(N, in_channels, H, W)``; output ``(N, out_channels, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (N, C_out, H/s, W/s)
        return self.relu(out + identity)


class ResNet34Encoder(nn.Module):
    """ResNet-34 without its pooling and classifier, returning multi-scale features.

    Module names match torchvision's ``resnet34`` (``conv1``, ``bn1``,
    ``layer1`` ... ``layer4``), so its state dict, less ``fc.*``, loads here.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.

    Attributes
    ----------
    out_channels : tuple of int
        Channels of the six features returned by :meth:`forward`:
        ``(in_channels, 64, 64, 128, 256, 512)``.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage_channels = RESNET34_CHANNELS[1:]
        previous = RESNET34_CHANNELS[0]
        for index, (blocks, channels) in enumerate(zip(RESNET34_LAYERS, stage_channels), start=1):
            stride = 1 if index == 1 else 2
            layer = [BasicBlock(previous, channels, stride)]
            layer += [BasicBlock(channels, channels) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*layer))
            previous = channels
        self.out_channels = (in_channels, *RESNET34_CHANNELS)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 1, 2, 4, 8, 16 and 32.

        Parameters
        ----------
        x : Tensor, shape (N, C_in, H, W)

        Returns
        -------
        list of Tensor
            Shapes ``(N, C_in, H, W)``, ``(N, 64, H/2, W/2)``, ``(N, 64, H/4, W/4)``,
            ``(N, 128, H/8, W/8)``, ``(N, 256, H/16, W/16)``, ``(N, 512, H/32, W/32)``.
        """
        features = [x]  # (N, C_in, H, W)
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, H/2, W/2)
        features.append(x)
        x = self.layer1(self.maxpool(x))  # (N, 64, H/4, W/4)
        features.append(x)
        x = self.layer2(x)  # (N, 128, H/8, W/8)
        features.append(x)
        x = self.layer3(x)  # (N, 256, H/16, W/16)
        features.append(x)
        x = self.layer4(x)  # (N, 512, H/32, W/32)
        features.append(x)
        return features


# --------------------------------------------------------------------------- U-Net decoder


class UnetDecoderBlock(nn.Module):
    """Upsample x2 (nearest), concatenate a skip feature, then two conv-BN-ReLU.

    Parameters
    ----------
    in_channels : int
        Channels of the incoming (deeper) feature.
    skip_channels : int
        Channels of the skip feature; 0 for none.
    out_channels : int
        Channels of the output.

    Notes
    -----
    Input ``(N, in_channels, h, w)`` and skip ``(N, skip_channels, 2h, 2w)``;
    output ``(N, out_channels, 2h, 2w)``. The names ``conv1.0`` (conv), ``conv1.1``
    (batch norm), ``conv2.*`` follow segmentation_models_pytorch.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (N, C_in, 2h, 2w)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (N, C_in + C_skip, 2h, 2w)
        return self.conv2(self.conv1(x))  # (N, C_out, 2h, 2w)


class _UnetDecoder(nn.Module):
    """Chain of :class:`UnetDecoderBlock` from the deepest encoder feature upwards.

    Parameters
    ----------
    encoder_channels : sequence of int
        Channels of the encoder features, shallowest (the input) first.
    decoder_channels : sequence of int
        Output channels of each block, deepest first; one block per downsampling.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        deep_first = list(encoder_channels[1:])[::-1]  # drop the input itself
        if len(decoder_channels) != len(deep_first):
            raise ValueError(
                f"need {len(deep_first)} decoder channels, got {len(decoder_channels)}"
            )
        in_channels = [deep_first[0], *decoder_channels[:-1]]
        skip_channels = [*deep_first[1:], 0]
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(i, s, o)
            for i, s, o in zip(in_channels, skip_channels, decoder_channels)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deep_first = list(features[1:])[::-1]
        x = deep_first[0]  # (N, 512, H/32, W/32)
        skips = deep_first[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)  # (N, C_i, H/2^(4-i), W/2^(4-i))
        return x  # (N, decoder_channels[-1], H, W)


class UnetResNet34(nn.Module):
    """U-Net with a ResNet-34 encoder (the paper's network).

    Parameters
    ----------
    num_landmarks : int
        Output channels K, one logit map per landmark.
    in_channels : int
        Input image channels.
    decoder_channels : sequence of int
        Widths of the five decoder blocks, deepest first.

    Notes
    -----
    Input ``(N, in_channels, H, W)`` with H and W multiples of 32; output logits
    ``(N, num_landmarks, H, W)``, no activation. With the defaults, one input
    channel and 19 landmarks it has 24,447,027 parameters, the count of
    ``smp.Unet("resnet34", in_channels=1, classes=19,
    decoder_channels=(256, 128, 64, 32, 32))``, and the same state-dict keys.
    """

    input_multiple = 32

    def __init__(
        self,
        num_landmarks: int,
        in_channels: int = 1,
        decoder_channels: Sequence[int] = PAPER_DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.encoder = ResNet34Encoder(in_channels)
        self.decoder = _UnetDecoder(self.encoder.out_channels, decoder_channels)
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(decoder_channels[-1], num_landmarks, kernel_size=3, padding=1)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.decoder.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        head = self.segmentation_head[0]
        nn.init.xavier_uniform_(head.weight)
        nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Landmark logits.

        Parameters
        ----------
        x : Tensor, shape (N, in_channels, H, W)
            H and W must be multiples of 32.

        Returns
        -------
        Tensor, shape (N, num_landmarks, H, W)
        """
        _check_input(x, self.in_channels, self.input_multiple)
        features = self.encoder(x)  # strides 1 .. 32
        x = self.decoder(features)  # (N, 32, H, W)
        return self.segmentation_head(x)  # (N, K, H, W)


# --------------------------------------------------------------------------- small U-Net


class _SmallDecoderBlock(nn.Module):
    """Upsample to the skip's size (nearest), concatenate it, then two conv-BN-ReLU.

    Input ``(N, in_channels, h, w)`` and skip ``(N, skip_channels, H', W')`` with
    ``H' = 2h`` or ``2h - 1`` (likewise W'); output ``(N, out_channels, H', W')``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")  # (N, C_in, H', W')
        x = torch.cat([x, skip], dim=1)  # (N, C_in + C_skip, H', W')
        return self.conv2(self.conv1(x))  # (N, C_out, H', W')


class UnetSmall(nn.Module):
    """Compact U-Net for CPU training.

    Six encoder stages of two conv-BN-ReLU each, separated by 2x2 max pooling
    (five downsamplings, ``ceil_mode`` so odd sizes work), and a mirrored
    decoder with nearest upsampling and skip connections. The full-resolution
    stage is kept thin (8 channels) because it dominates the cost; the deep
    stages are wide for a large receptive field.

    Parameters
    ----------
    num_landmarks : int
        Output channels K, one logit map per landmark.
    in_channels : int
        Input image channels.
    widths : sequence of int
        Channels of the encoder stages, full resolution first; the decoder
        reuses them; ``len(widths) - 1`` downsamplings. The default
        ``(8, 16, 32, 64, 128, 160)`` gives 1,388,211 parameters for one input
        channel and 19 landmarks.
    width_multiplier : float
        Scales every entry of ``widths`` (rounded, at least 4).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` with H, W >= ``2 ** (len(widths) - 1)``
    (32 by default; no multiple is required because each upsampling matches
    its skip's size); output logits
    ``(N, num_landmarks, H, W)``, no activation.
    """

    input_multiple = 1

    def __init__(
        self,
        num_landmarks: int,
        in_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32, 64, 128, 160),
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"need at least two stage widths, got {tuple(widths)}")
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.widths = tuple(max(4, round(w * width_multiplier)) for w in widths)
        self.min_size = 2 ** (len(self.widths) - 1)  # smallest valid H and W
        previous = in_channels
        stages = []
        for width in self.widths:
            stage = nn.Sequential(_conv_bn_relu(previous, width), _conv_bn_relu(width, width))
            stages.append(stage)
            previous = width
        self.encoder = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        deep_first = self.widths[::-1]
        self.decoder = nn.ModuleList(
            _SmallDecoderBlock(deep, skip, skip) for deep, skip in pairwise(deep_first)
        )
        self.head = nn.Conv2d(self.widths[0], num_landmarks, kernel_size=3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.head:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Landmark logits.

        Parameters
        ----------
        x : Tensor, shape (N, in_channels, H, W)

        Returns
        -------
        Tensor, shape (N, num_landmarks, H, W)
        """
        _check_input(x, self.in_channels, self.input_multiple, self.min_size)
        skips = []
        for depth, stage in enumerate(self.encoder):
            if depth:
                x = self.pool(x)  # (N, C, ceil(H/2^d), ceil(W/2^d))
            x = stage(x)  # (N, widths[d], H/2^d, W/2^d)
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip)  # (N, C_skip, H_skip, W_skip)
        return self.head(x)  # (N, K, H, W)


# --------------------------------------------------------------------------- ImageNet weights


def adapt_resnet34_state_dict(
    state_dict: Mapping[str, torch.Tensor], in_channels: int
) -> dict[str, torch.Tensor]:
    """Turn a torchvision ``resnet34`` state dict into one for :class:`ResNet34Encoder`.

    Drops the classifier (``fc.*``) and adapts ``conv1.weight``, shape
    ``(64, 3, 7, 7)``, to ``in_channels``: summed over the RGB axis for one
    channel (a grey image ``g`` then gives the response of the RGB image
    ``(g, g, g)``), unchanged for three, and otherwise the RGB filters repeated
    cyclically and scaled by ``3 / in_channels``.

    Parameters
    ----------
    state_dict : mapping of str to Tensor
        torchvision-style keys (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...).
    in_channels : int
        Input channels of the target encoder.

    Returns
    -------
    dict of str to Tensor
        A new dict; the input is not modified.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    adapted = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    if "conv1.weight" not in adapted:
        raise KeyError("state dict has no 'conv1.weight'; is it a torchvision ResNet?")
    weight = adapted["conv1.weight"]  # (64, C_src, 7, 7)
    source_channels = weight.shape[1]
    if in_channels == source_channels:
        return adapted
    if in_channels == 1:
        adapted["conv1.weight"] = weight.sum(dim=1, keepdim=True)  # (64, 1, 7, 7)
    else:
        index = torch.arange(in_channels) % source_channels
        adapted["conv1.weight"] = weight[:, index] * (source_channels / in_channels)
    return adapted


def load_torchvision_resnet34_weights(model: nn.Module) -> nn.Module:
    """Load torchvision's ImageNet ResNet-34 weights into ``model.encoder``.

    Needs torchvision (``pip install chh-kit[pretrained]``) and, the first
    time, network access to download the weights.

    Parameters
    ----------
    model : UnetResNet34
        Modified in place; the decoder and head are left untouched.

    Returns
    -------
    nn.Module
        ``model``, for chaining.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    TypeError
        If ``model`` has no :class:`ResNet34Encoder` as ``encoder``.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, ResNet34Encoder):
        raise TypeError(f"{type(model).__name__} has no ResNet34Encoder 'encoder' attribute")
    try:
        from torchvision.models import ResNet34_Weights, resnet34
    except ImportError as error:
        raise ImportError(
            "loading ImageNet weights needs torchvision; install it with "
            "`pip install chh-kit[pretrained]`"
        ) from error
    source = resnet34(weights=ResNet34_Weights.IMAGENET1K_V1).state_dict()
    encoder.load_state_dict(adapt_resnet34_state_dict(source, encoder.in_channels), strict=True)
    return model


# --------------------------------------------------------------------------- registry


def unet_resnet34(
    num_landmarks: int, in_channels: int = 1, pretrained: bool = False, **kwargs
) -> UnetResNet34:
    """The paper's U-Net/ResNet-34; ``pretrained=True`` loads ImageNet encoder weights.

    Other keyword arguments go to :class:`UnetResNet34`.
    """
    model = UnetResNet34(num_landmarks, in_channels, **kwargs)
    if pretrained:
        load_torchvision_resnet34_weights(model)
    return model


def unet_small(num_landmarks: int, in_channels: int = 1, **kwargs) -> UnetSmall:
    """The compact CPU U-Net; keyword arguments go to :class:`UnetSmall`."""
    return UnetSmall(num_landmarks, in_channels, **kwargs)


#: Model constructors by name; each takes ``(num_landmarks, in_channels, **kwargs)``.
MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet_resnet34": unet_resnet34,
    "unet_small": unet_small,
}

_INPUT_MULTIPLES = {
    "unet_resnet34": UnetResNet34.input_multiple,
    "unet_small": UnetSmall.input_multiple,
}


def _check_name(name: str) -> None:
    if name not in MODEL_REGISTRY:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(f"unknown model {name!r}; known models: {known}")


def build_model(name: str, num_landmarks: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Construct a registered model.

    Parameters
    ----------
    name : str
        A key of :data:`MODEL_REGISTRY`.
    num_landmarks : int
        Output channels K.
    in_channels : int
        Input image channels.
    **kwargs
        Passed to the constructor (e.g. ``pretrained=True``, ``width_multiplier=0.5``).

    Returns
    -------
    nn.Module
        Maps ``(N, in_channels, H, W)`` to logits ``(N, num_landmarks, H, W)``.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    """
    _check_name(name)
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be positive, got {num_landmarks}")
    return MODEL_REGISTRY[name](num_landmarks, in_channels, **kwargs)


def input_multiple(name: str) -> int:
    """The number that the input H and W of model ``name`` must be multiples of."""
    _check_name(name)
    return _INPUT_MULTIPLES[name]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
