"""Stage-1 networks: shapes, architecture details, weight loading and contrastive losses."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer
from monai.networks.nets import SEResNext50
from monai.networks.nets.senet import SEResNeXtBottleneck
from torch import nn
from torchvision import models as tvm
from torchvision.ops import SqueezeExcitation

from medflow.models import (
    MODEL_NAMES,
    Classifier,
    ProjectionHead,
    build_model,
    load_weights,
    nt_xent_loss,
    supcon_loss,
)

FEATURE_DIMS = {
    "se_resnet101": 2048,
    "resnext50_32x4d": 2048,
    "efficientnet_b0": 1280,
    "resnet18": 512,
    "convnet": 64,
    "se_resnext50_3d": 2048,
}


def _input(name: str, in_channels: int = 1, batch: int = 2) -> torch.Tensor:
    shape = (batch, in_channels, 16, 32, 32) if name.endswith("_3d") else (batch, in_channels, 64, 64)
    return torch.randn(shape)


def test_model_names_are_the_documented_set():
    assert set(MODEL_NAMES) == set(FEATURE_DIMS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_and_feature_dim(name):
    torch.manual_seed(0)
    model = build_model(name, num_outputs=3).eval()
    assert isinstance(model, Classifier)
    assert model.feature_dim == FEATURE_DIMS[name]
    x = _input(name)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (2, FEATURE_DIMS[name])
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    # the logits are the head applied to the features, nothing else
    torch.testing.assert_close(logits, model.head(feats))


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("in_channels", [2, 3])
def test_in_channels(name, in_channels):
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels).eval()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d))
    assert stem.in_channels == in_channels
    with torch.no_grad():
        assert model(_input(name, in_channels)).shape == (2, 1)
    with pytest.raises(RuntimeError):
        model(_input(name, in_channels + 1))


@pytest.mark.parametrize("name", ["se_resnet101", "resnext50_32x4d", "resnet18", "efficientnet_b0"])
def test_replaced_stem_keeps_geometry(name):
    model = build_model(name, in_channels=1)
    reference = getattr(tvm, name.removeprefix("se_"))(weights=None)
    ref_stem = next(m for m in reference.modules() if isinstance(m, nn.Conv2d))
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    for attr in ("out_channels", "kernel_size", "stride", "padding"):
        assert getattr(stem, attr) == getattr(ref_stem, attr)
    assert stem.bias is None


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet18") as info:
        build_model("resnet1001")
    assert all(name in str(info.value) for name in MODEL_NAMES)


def test_dropout_head_keeps_checkpoint_keys():
    plain, dropped = build_model("convnet"), build_model("convnet", dropout=0.3)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    assert isinstance(dropped.head[0], nn.Dropout) and dropped.head[0].p == 0.3


def test_se_resnet101_has_one_se_block_after_layer4():
    torch.manual_seed(0)
    model = build_model("se_resnet101").eval()
    se_blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se_blocks) == 1
    se = se_blocks[0]
    assert se.fc1.in_channels == 2048 and se.fc1.out_channels == 2048 // 16

    names = [n for n, _ in model.encoder.named_children()]
    assert names.index("se") == names.index("layer4") + 1
    assert names[-1] == "avgpool"

    seen: dict[str, torch.Tensor] = {}
    model.encoder.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("layer4_out", o))
    se.register_forward_hook(lambda m, i, o: seen.update(se_in=i[0], se_out=o))
    model.encoder.avgpool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool_in", i[0]))
    x = _input("se_resnet101")
    with torch.no_grad():
        before = model.features(x)
    assert seen["se_in"] is seen["layer4_out"]
    assert seen["pool_in"] is seen["se_out"]
    assert seen["se_in"].shape[1] == 2048

    # the SE gate really acts: a different excitation changes the features
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(-30.0)  # gate sigmoid(-30) ≈ 0 everywhere
        after = model.features(x)
    assert not torch.allclose(before, after)
    assert after.abs().max() < 1e-6


def test_se_resnext50_3d_is_monai_cardinality_32_reduction_16():
    model = build_model("se_resnext50_3d", in_channels=2)
    blocks = [m for m in model.modules() if isinstance(m, SEResNeXtBottleneck)]
    assert len(blocks) == 3 + 4 + 6 + 3
    block = blocks[0]
    assert block.conv2.conv.groups == 32
    se = block.se_layer
    assert isinstance(se, ChannelSELayer)
    channels = block.conv3.conv.out_channels
    squeeze = next(m for m in se.fc if isinstance(m, nn.Linear))
    assert (squeeze.in_features, squeeze.out_features) == (channels, channels // 16)
    assert isinstance(model.encoder.layer0.conv1, nn.Conv3d) and model.encoder.layer0.conv1.in_channels == 2
    assert isinstance(model.encoder.last_linear, nn.Identity)


def test_one_step_lowers_convnet_loss():
    torch.manual_seed(0)
    model = build_model("convnet").train()
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        new_loss = F.binary_cross_entropy_with_logits(model(x), y)
    assert new_loss < loss.item() - 1e-4


# --- contrastive -------------------------------------------------------------------------------


def _nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR NT-Xent written out with loops: mean over 2B anchors of -log softmax of the partner."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    return total / n


def _supcon_reference(z: torch.Tensor, labels: list[int], t: float) -> float:
    """Khosla et al. L_out with loops: mean over anchors of the mean -log p over its positives."""
    z = [v / v.norm() for v in z.double()]
    n = len(z)
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(n) if a != i)
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in positives) / len(positives)
    return total / n


def test_nt_xent_matches_loop_reference():
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 5), torch.randn(3, 5)
    for t in (0.5, 0.1):
        assert nt_xent_loss(z1, z2, temperature=t).item() == pytest.approx(
            _nt_xent_reference(z1, z2, t), rel=1e-5
        )


def test_nt_xent_identical_views_beat_random_views_and_is_symmetric():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    assert nt_xent_loss(z1, z1.clone()) < nt_xent_loss(z1, z2)
    torch.testing.assert_close(nt_xent_loss(z1, z2), nt_xent_loss(z2, z1))
    # scale-invariant (cosine similarity)
    torch.testing.assert_close(nt_xent_loss(3 * z1, 0.5 * z2), nt_xent_loss(z1, z2))


def test_losses_are_stable_and_fp32_for_low_precision_inputs():
    torch.manual_seed(0)
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8)
    loss = nt_xent_loss(z1, z2, temperature=0.01)  # logits up to 100: exp overflows without max-shift
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()
    for dtype in (torch.float16, torch.bfloat16):
        low = nt_xent_loss(z1.detach().to(dtype), z2.to(dtype), temperature=0.01)
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(loss.item(), rel=2e-2)
        sup = supcon_loss(torch.cat([z1.detach(), z2]).to(dtype), torch.arange(4).repeat(2), temperature=0.01)
        assert sup.dtype == torch.float32 and torch.isfinite(sup)


def test_supcon_with_distinct_labels_equals_nt_xent():
    # one label per sample: each anchor's only positive is its other view, which is NT-Xent exactly
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    labels = torch.arange(5).repeat(2)
    torch.testing.assert_close(supcon_loss(torch.cat([z1, z2]), labels), nt_xent_loss(z1, z2))


def test_supcon_matches_loop_reference_with_shared_labels():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    labels = [0, 1, 0, 0, 1, 0]  # B=3 samples, two views each; classes shared across samples
    got = supcon_loss(z, torch.tensor(labels), temperature=0.3).item()
    assert got == pytest.approx(_supcon_reference(z, labels, 0.3), rel=1e-5)
    # shared labels add positives, so the loss differs from treating every sample as its own class
    assert got != pytest.approx(supcon_loss(z, torch.tensor([0, 1, 2, 0, 1, 2]), temperature=0.3).item())


def test_supcon_rejects_labels_without_positives():
    with pytest.raises(ValueError, match="positive"):
        supcon_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_projection_head_shape():
    head = ProjectionHead()
    assert head(torch.randn(4, 2048)).shape == (4, 128)
    dims = [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)]
    assert dims == [(2048, 512), (512, 128)]


# --- load_weights ------------------------------------------------------------------------------


@pytest.fixture
def resnet18_file(tmp_path):
    torch.manual_seed(1)
    state = tvm.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_load_torchvision_weights_into_one_channel_model(resnet18_file, caplog):
    path, state = resnet18_file
    torch.manual_seed(2)
    model = build_model("resnet18", in_channels=1)
    head_before = model.head[1].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="medflow.models.weights"):
        not_loaded = load_weights(model, path)
    assert not_loaded == ["head.1.weight", "head.1.bias"]
    assert "head.1.weight" in caplog.text and "fc.weight" in caplog.text

    loaded = model.state_dict()
    torch.testing.assert_close(loaded["encoder.conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    for key in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "bn1.bias"):
        torch.testing.assert_close(loaded[f"encoder.{key}"], state[key])
    torch.testing.assert_close(model.head[1].weight, head_before)


def test_load_via_build_model_and_wrapped_checkpoint(resnet18_file, tmp_path):
    path, state = resnet18_file
    three = build_model("resnet18", in_channels=3, weights=path)
    torch.testing.assert_close(three.state_dict()["encoder.conv1.weight"], state["conv1.weight"])

    # medflow-style round trip, wrapped like a training checkpoint, including the head
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"model": three.state_dict(), "epoch": 3}, wrapped)
    again = build_model("resnet18", in_channels=3)
    assert load_weights(again, wrapped) == []
    for key, value in three.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_classifier_layer_of_fitting_shape_goes_to_head(tmp_path):
    state = tvm.resnet18(weights=None, num_classes=1).state_dict()
    path = tmp_path / "binary.pth"
    torch.save({"state_dict": state}, path)
    model = build_model("resnet18", in_channels=3)
    assert load_weights(model, path) == []
    torch.testing.assert_close(model.head[1].weight, state["fc.weight"])


def test_wrong_shape_names_key_and_shapes(resnet18_file, tmp_path):
    _, state = resnet18_file
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1\.weight.*\(128, 32, 3, 3\).*\(128, 64, 3, 3\)"):
        load_weights(build_model("resnet18"), path)


def test_stem_other_than_three_to_one_is_a_mismatch(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        load_weights(build_model("resnet18", in_channels=2), path)


def test_missing_file_says_no_download(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="never downloads") as info:
        load_weights(build_model("convnet"), missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError):
        build_model("convnet", weights=missing)


def test_unrelated_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="matches"):
        load_weights(build_model("convnet"), path)


def test_load_efficientnet_and_monai_checkpoints(tmp_path):
    torch.manual_seed(0)
    eff = tvm.efficientnet_b0(weights=None).state_dict()  # stem is features.0.0, classifier.1 is 1000-way
    torch.save(eff, tmp_path / "eff.pth")
    model = build_model("efficientnet_b0", in_channels=1, weights=tmp_path / "eff.pth")
    torch.testing.assert_close(
        model.state_dict()["encoder.features.0.0.weight"], eff["features.0.0.weight"].sum(1, keepdim=True)
    )

    monai_state = SEResNext50(spatial_dims=3, in_channels=1, num_classes=1).state_dict()
    torch.save(monai_state, tmp_path / "monai.pth")
    model = build_model("se_resnext50_3d")
    assert load_weights(model, tmp_path / "monai.pth") == []  # last_linear (1×2048) fits the head
    torch.testing.assert_close(model.head[1].weight, monai_state["last_linear.weight"])
    torch.testing.assert_close(
        model.state_dict()["encoder.layer0.conv1.weight"], monai_state["layer0.conv1.weight"]
    )


def test_efficientnet_eval_mode_is_not_constant_after_a_short_training():
    """A few training steps must leave BatchNorm statistics that separate inputs in eval mode."""
    torch.manual_seed(0)
    model = build_model("efficientnet_b0")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(8, 1, 32, 32) * 0.2  # inputs far from the N(0, 1) the initial statistics assume
    for _ in range(20):
        optimizer.zero_grad()
        model(x + torch.rand_like(x) * 0.05).mean().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        features = model.features(x)
    assert features.std(0).mean() > 1e-4


def test_frozen_encoder_stays_fixed_in_train_mode_and_through_a_wrapper():
    """freeze_encoder is part of the module's own forward, so a wrapper that calls forward (as
    DistributedDataParallel does) trains the head alone and leaves the encoder's statistics be."""
    from torch import nn

    from medflow.models.classifier import Classifier

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1))
    model = Classifier(encoder, feature_dim=4).freeze_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    wrapper = nn.Sequential(model)  # anything that only calls forward
    wrapper.train()
    assert model.training and model.head.training and not encoder.training
    loss = wrapper(torch.randn(6, 1, 8, 8) * 3 + 2).sum()
    loss.backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert model.head[1].weight.grad is not None
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, before[key])  # running statistics untouched
