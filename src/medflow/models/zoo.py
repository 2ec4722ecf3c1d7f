"""Stage-1 networks by name; each is returned as a :class:`Classifier`.

Pretrained weights are never downloaded: torchvision models are built with ``weights=None`` and a
local state_dict can be given as ``weights`` (see :func:`load_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from monai.networks.nets import SEResNext50
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.ops import SqueezeExcitation

from .classifier import Classifier
from .weights import load_weights


def replace_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A conv like ``conv`` (filters, kernel, stride, padding, bias) but reading ``in_channels`` channels.

    torchvision stems read RGB; our images are grey (or stacked windows/modalities).
    """
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


class SEResNet(nn.Module):
    """A torchvision ResNet trunk with one squeeze-and-excitation block after its last stage.

    This is the published CLNM model (ResNet101 + one SE layer on the 2048-channel layer4 output).
    Attribute names follow torchvision's ResNet, so its state_dicts load with an ``encoder.`` prefix.
    """

    def __init__(self, resnet: tvm.ResNet, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        channels = resnet.fc.in_features
        self.se = SqueezeExcitation(channels, channels // reduction)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(self.se(x)).flatten(1)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """Small lung-nodule CNN: two (conv-BN-ReLU ×2, max-pool) stages of 32 and 64 channels, global pool.

    Few parameters, so it trains from scratch on small patch cohorts.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in widths:
            layers += [*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.avgpool(self.features(x)).flatten(1)


def _torchvision_resnet(factory: Callable[..., tvm.ResNet], in_channels: int) -> tvm.ResNet:
    net = factory(weights=None)
    net.conv1 = replace_stem(net.conv1, in_channels)
    return net


def _se_resnet101(in_channels: int) -> tuple[nn.Module, int]:
    return SEResNet(_torchvision_resnet(tvm.resnet101, in_channels), reduction=16), 2048


def _resnet_encoder(factory: Callable[..., tvm.ResNet]) -> Callable[[int], tuple[nn.Module, int]]:
    def build(in_channels: int) -> tuple[nn.Module, int]:
        net = _torchvision_resnet(factory, in_channels)
        dim = net.fc.in_features
        net.fc = nn.Identity()  # the Classifier head replaces it
        return net, dim

    return build


def _efficientnet_b0(in_channels: int) -> tuple[nn.Module, int]:
    net = tvm.efficientnet_b0(weights=None)
    net.features[0][0] = replace_stem(net.features[0][0], in_channels)
    dim = net.classifier[-1].in_features
    net.classifier = nn.Identity()
    # EfficientNet's activations shrink block after block unless BatchNorm normalises them, and
    # torchvision's momentum of 0.01 leaves the running statistics near their initial values for
    # the few hundred steps of a medical cohort: in eval mode every input then gives the same
    # output. A cumulative average (momentum None) tracks what training actually saw.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    return net, dim


def _convnet(in_channels: int) -> tuple[nn.Module, int]:
    net = ConvNet(in_channels)
    return net, net.out_channels


def _se_resnext50_3d(in_channels: int) -> tuple[nn.Module, int]:
    # MONAI defaults: cardinality (groups) 32, SE reduction 16, no dropout.
    net = SEResNext50(spatial_dims=3, in_channels=in_channels, num_classes=1)
    dim = net.last_linear.in_features
    net.last_linear = nn.Identity()  # encoder = layer0..layer4 + adaptive pooling
    return net, dim


_BUILDERS: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "se_resnet101": _se_resnet101,
    "resnext50_32x4d": _resnet_encoder(tvm.resnext50_32x4d),
    "efficientnet_b0": _efficientnet_b0,
    "resnet18": _resnet_encoder(tvm.resnet18),
    "convnet": _convnet,
    "se_resnext50_3d": _se_resnext50_3d,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(
    name: str,
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    weights: str | Path | None = None,
    dropout: float = 0.0,
) -> Classifier:
    """Build network ``name`` as a :class:`Classifier` (``se_resnext50_3d`` takes volumes ``(B, C, D, H, W)``).

    ``weights``: a local state_dict file loaded with :func:`load_weights` (never a download).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, not {in_channels}")
    encoder, feature_dim = _BUILDERS[name](in_channels)
    model = Classifier(encoder, feature_dim, num_outputs=num_outputs, dropout=dropout)
    if weights is not None:
        load_weights(model, weights)
    return model
