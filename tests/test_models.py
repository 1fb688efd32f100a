"""The model zoo: every network builds, runs, and has the official parameter counts and key layout."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ecanet import models
from ecanet.models import EcaModule, adaptive_kernel_size, create_model, parse_kernel_sizes, set_eca_impl
from conftest import official_layouts, read_layout

ECA_ARCHS = ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenet_v2"]
BASELINES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"]
SE_ARCHS = ["se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152"]

# Parameter counts of the official code with the released kernel sizes (README of the issue tracker and
# the released files), torchvision's resnets/mobilenet_v2, and SE-ResNets with reduction 16.
PINNED_PARAMS = {
    ("eca_resnet18", "3577"): 11_689_556,
    ("eca_resnet34", "3357"): 21_797_744,
    ("eca_resnet50", "3557"): 25_557_112,
    ("eca_resnet101", "3357"): 44_549_317,
    ("eca_resnet152", "3357"): 60_193_042,
    ("eca_mobilenet_v2", None): 3_504_903,
    ("resnet18", None): 11_689_512,
    ("resnet50", None): 25_557_032,
    ("resnet152", None): 60_192_808,
    ("mobilenet_v2", None): 3_504_872,
    ("se_resnet50", None): 28_088_024,  # Hu et al.'s SE-ResNet-50 (Cadene's pretrainedmodels count)
}


def test_registry_lists_every_network():
    assert set(models.list_models()) == set(ECA_ARCHS + BASELINES + SE_ARCHS)
    assert models.list_models("eca_*") == sorted(ECA_ARCHS)


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(models.UnknownModelError, match="did you mean eca_resnet50\\? known: eca_mobilenet_v2, "):
        create_model("ECA_ResNet50")
    with pytest.raises(models.UnknownModelError, match="'transformer'; known: eca_mobilenet_v2, "):
        create_model("transformer")


def test_list_models_takes_a_pattern_or_a_list_of_them():
    assert models.list_models("eca_resnet1*") == ["eca_resnet101", "eca_resnet152", "eca_resnet18"]
    assert models.list_models(["se_resnet1?", "mobile*"]) == ["mobilenet_v2", "se_resnet18"]
    with pytest.raises(TypeError, match="shell pattern"):
        models.list_models(5)


def test_ksize_on_a_baseline_is_refused():
    with pytest.raises(ValueError, match="ECA networks only"):
        create_model("resnet50", k_size="3557")


@pytest.mark.parametrize("arch", sorted(ECA_ARCHS + BASELINES + SE_ARCHS))
def test_every_model_maps_a_batch_to_logits(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_mobilenet_v2"])
def test_the_head_api_is_timms(arch):
    """num_classes=0 gives the pooled features and no classifier weights; forward_features, forward_head,
    get_classifier and reset_classifier split and swap the head as timm's networks do."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).eval()
    assert model.num_classes == 10
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        assert features.shape == (2, model.num_features)
        torch.testing.assert_close(model.get_classifier()(features), logits)
        headless = create_model(arch, num_classes=0).eval()
        unused = headless.load_state_dict(model.state_dict(), strict=False)
        assert not unused.missing_keys and all(k.startswith(("fc.", "classifier.")) for k in unused.unexpected_keys)
        torch.testing.assert_close(headless(x), features)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), features)
        assert model.num_classes == 0
        with pytest.raises(ValueError, match="num_classes must be"):
            model.reset_classifier("5")
        assert model.num_classes == 0 and model.global_pool == "avg"   # a refused call changes nothing
        model.reset_classifier(0, "")   # no pooling either: the last feature map
        torch.testing.assert_close(model(x), model.forward_features(x))
        with pytest.raises(ValueError, match="pass num_classes=0 with it"):
            model.reset_classifier(5)   # unpooled maps take no classifier
        model.reset_classifier(5, "avg")
        assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="num_classes must be a whole number >= 0"):
        create_model(arch, num_classes=-1)
    numpy_count = create_model(arch, num_classes=np.int64(4))
    assert numpy_count.get_classifier().out_features == 4 and type(numpy_count.num_classes) is int
    doubled = create_model(arch).double()
    doubled.reset_classifier(5)   # on the network's device, in its dtype
    assert doubled.get_classifier().weight.dtype == torch.float64


@pytest.mark.parametrize("impl", ["auto", "fused", "plain"])
@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2"])
def test_feature_extraction_traces_every_implementation(arch, impl):
    """torchvision's feature extraction (torch.fx) traces the networks in training and eval mode under every ECA
    implementation, as detection and segmentation code does with a backbone; a traced graph holds the plain
    computation (the fused kernels need real tensors) and gives the network's output."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7, eca_impl=impl)
    reference = set_eca_impl(copy.deepcopy(model), "plain")
    _, eval_nodes = get_graph_node_names(model)   # traces both modes
    extractor = create_feature_extractor(model, return_nodes={eval_nodes[-1]: "logits"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for train in (True, False):
            torch.manual_seed(1)   # the same dropout mask (MobileNetV2's classifier)
            got = copy.deepcopy(extractor).train(train)(x)["logits"]
            torch.manual_seed(1)
            torch.testing.assert_close(got, copy.deepcopy(reference).train(train)(x), msg=f"train={train}")


@pytest.mark.parametrize(("arch", "k"), sorted(PINNED_PARAMS, key=str))
def test_parameter_counts(arch, k):
    model = create_model(arch, k_size=k)
    assert models.count_parameters(model) == PINNED_PARAMS[(arch, k)]


# psi(C) by hand: t = int(|(log2 C + 1) / 2|), then the next odd number.
PSI = {8: 3, 16: 3, 24: 3, 32: 3, 64: 3, 96: 3, 128: 5, 160: 5, 256: 5, 320: 5, 512: 5, 1024: 5,
       1280: 5, 2048: 7, 4096: 7}


@pytest.mark.parametrize("channels", sorted(PSI))
def test_adaptive_kernel_size(channels):
    assert adaptive_kernel_size(channels) == PSI[channels]


def test_adaptive_kernel_size_every_c_is_odd_and_monotone():
    ks = [adaptive_kernel_size(c) for c in range(8, 4097)]
    assert all(k % 2 == 1 for k in ks)
    assert all(a <= b for a, b in zip(ks, ks[1:]))
    assert adaptive_kernel_size(64, gamma=1, b=0) == 7  # log2(64) = 6 -> even -> 7


def test_default_eca_resnet_is_adaptive():
    sizes = models.eca_kernel_sizes(create_model("eca_resnet50"))
    # psi(256) = 5, psi(512) = 5, psi(1024) = 5, psi(2048) = 7
    assert {name.split(".")[0]: k for name, k in sizes.items()} == {"layer1": 5, "layer2": 5, "layer3": 5,
                                                                     "layer4": 7}


def test_kernel_size_forms():
    assert parse_kernel_sizes("3557", 4) == [3, 5, 5, 7]
    assert parse_kernel_sizes([3, 5, 5, 7], 4) == [3, 5, 5, 7]
    assert parse_kernel_sizes("3, 5, 5, 9", 4) == [3, 5, 5, 9]
    assert parse_kernel_sizes(5, 4) == [5, 5, 5, 5]
    assert parse_kernel_sizes("adaptive", 4) == [None] * 4
    assert parse_kernel_sizes(np.int64(5), 4) == [5, 5, 5, 5]       # NumPy's integers, as EcaModule takes
    for bad in ("3556", "35", "abc", 4, [3, 5], [3, 5.5, 5, 7]):
        with pytest.raises(ValueError):
            parse_kernel_sizes(bad, 4)


def test_new_kernel_sizes_keep_the_networks_dtype_and_device():
    model = create_model("eca_resnet18", eca_impl="plain").double()
    models.set_eca_kernel_sizes(model, {"layer1.0.eca": 7})
    assert model.layer1[0].eca.k_size == 7 and model.layer1[0].eca.conv.weight.dtype == torch.float64
    assert model.eval()(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = create_model("eca_resnet18", eca_impl="plain").to("meta")
    models.set_eca_kernel_sizes(meta, {"layer2.0.eca": 7})
    assert meta.layer2[0].eca.conv.weight.device.type == "meta"


def test_eca_mobilenet_v2_official_rule():
    sizes = list(models.eca_kernel_sizes(create_model("eca_mobilenet_v2")).values())
    # blocks 1-10 have < 96 output channels (16, 24, 24, 32 x3, 64 x4) -> k=1; the 7 others -> k=3
    assert sizes == [1] * 10 + [3] * 7
    assert list(models.eca_kernel_sizes(create_model("eca_mobilenet_v2", k_size="35")).values()) == \
        [3] * 10 + [5] * 7


def _reference_eca(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ECA by its definition, with explicit loops: w_c = sigmoid(sum_j k_j * y_{c + j - pad})."""
    b, c = x.shape[:2]
    k = weight.numel()
    pad = (k - 1) // 2
    y = x.double().sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    gate = torch.zeros(b, c, dtype=torch.float64)
    for i in range(c):
        for j in range(k):
            src = i + j - pad
            if 0 <= src < c:
                gate[:, i] += weight.flatten()[j].double() * y[:, src]
    return x.double() * torch.sigmoid(gate)[:, :, None, None]


@pytest.mark.parametrize(("channels", "k"), [(16, 3), (37, 5), (64, None), (10, 1)])
def test_eca_module_matches_its_definition(channels, k):
    torch.manual_seed(1)
    module = EcaModule(channels, k)
    torch.nn.init.normal_(module.conv.weight)
    x = torch.randn(3, channels, 5, 7)
    expected = _reference_eca(x, module.conv.weight.detach())
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-6)
    assert tuple(module.conv.weight.shape) == (1, 1, k or adaptive_kernel_size(channels))
    identity = torch.randn_like(x)
    torch.testing.assert_close(module.scale_add_relu(x, identity).double(),
                               torch.relu(expected + identity.double()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(official_layouts()))
def test_state_dict_matches_the_official_layout(name):
    rows, params = read_layout(official_layouts()[name])
    arch, _, k = name.rpartition("_k")
    model = create_model(arch, k_size=None if arch == "eca_mobilenet_v2" else k)
    ours = [(key, tuple(t.shape), t.dtype) for key, t in model.state_dict().items()]
    theirs = [(key[len("module."):], shape, dtype) for key, shape, dtype in rows]
    assert ours == theirs  # key for key, shape for shape, dtype for dtype, in order
    assert models.count_parameters(model) == params


def test_official_initialisation():
    torch.manual_seed(0)
    model = create_model("eca_resnet50")
    w = model.layer3[0].conv2.weight  # 3x3, 256 outputs: N(0, sqrt(2 / (9 * 256)))
    assert abs(w.std().item() - math.sqrt(2 / (9 * 256))) < 0.02 * math.sqrt(2 / (9 * 256)) * 5
    assert torch.all(model.layer3[0].bn3.weight == 1) and torch.all(model.layer3[0].bn3.bias == 0)


@pytest.mark.parametrize("kwargs, message", [({"channels": 64.0}, "ECA channels must be a whole number >= 1"),
                                             ({"channels": 0}, "ECA channels must be a whole number >= 1"),
                                             ({"channels": True}, "ECA channels must be a whole number"),
                                             ({"channels": 64, "k_size": 3.0}, "ECA k_size must be a whole number"),
                                             ({"channels": 64, "k_size": 4}, "positive odd integer")])
def test_eca_module_refuses_what_is_no_layer_size(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EcaModule(**kwargs)
    assert EcaModule(np.int64(64), k_size=np.int64(5)).k_size == 5
