"""load_model: the released files' format, bare state_dicts, wrapper prefixes, and clear errors."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from ecanet import models
from ecanet.checkpoint import load_model, save_checkpoint, strip_wrapper_prefixes
from ecanet.errors import CheckpointError
from conftest import official_layouts, official_state_dict

LAYOUTS = official_layouts()


def _official_file(tmp_path, name, arch_field=None, seed=0):
    """A file in the official container format, built from the released layout with random weights."""
    state_dict = official_state_dict(LAYOUTS[name], seed)
    arch = name.rpartition("_k")[0]
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"epoch": 100, "arch": arch_field or arch, "state_dict": state_dict, "best_prec1": 77.48,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, state_dict


@pytest.mark.parametrize("name", ["eca_resnet18_k3577", "eca_resnet50_k3557", "eca_mobilenet_v2_k13"])
def test_official_files_load_with_their_kernel_sizes(tmp_path, name):
    path, state_dict = _official_file(tmp_path, name)
    model = load_model(path)
    arch, _, k = name.rpartition("_k")
    assert type(model) is type(models.create_model(arch))
    loaded = model.state_dict()
    for key, value in state_dict.items():
        assert torch.equal(loaded[key[len("module."):]], value), key
    sizes = sorted(set(models.eca_kernel_sizes(model).values()))
    assert sizes == sorted({int(c) for c in k})
    assert not model.training


def test_official_file_with_the_wrong_arch_field(tmp_path, caplog):
    # One released file says arch 'se_resnet50' while holding an ECA-ResNet-50.
    path, _ = _official_file(tmp_path, "eca_resnet50_k3557", arch_field="se_resnet50")
    with caplog.at_level(logging.WARNING):
        model = load_model(path)
    assert "se_resnet50" in caplog.text and "eca_resnet50" in caplog.text
    assert isinstance(model.layer4[2].eca, models.EcaModule) and model.layer4[2].eca.k_size == 7


def test_bare_state_dicts_with_and_without_prefixes(tmp_path):
    reference = models.create_model("eca_resnet18", num_classes=10, k_size="3577")
    sd = reference.state_dict()
    for i, prefix in enumerate(["", "module.", "_orig_mod.", "module._orig_mod."]):
        path = tmp_path / f"bare{i}.pth"
        torch.save({prefix + k: v for k, v in sd.items()}, path)
        model = load_model(path, arch="eca_resnet18")
        assert model.fc.out_features == 10
        for key, value in sd.items():
            assert torch.equal(model.state_dict()[key], value)


def test_per_layer_kernel_sizes_are_read_off_the_weights(tmp_path):
    reference = models.create_model("eca_resnet34", k_size="3357")
    models.set_eca_kernel_sizes(reference, {"layer3.4.eca": 9})  # no per-stage rule describes this
    path = tmp_path / "odd.pth"
    save_checkpoint({"state_dict": reference.state_dict(), "arch": "eca_resnet34"}, path)
    model = load_model(path)
    assert models.eca_kernel_sizes(model) == models.eca_kernel_sizes(reference)


def test_strict_arch_refuses_another_network(tmp_path):
    path, _ = _official_file(tmp_path, "eca_resnet18_k3577")
    with pytest.raises(CheckpointError, match=r"holds eca_resnet18.*-a eca_resnet18"):
        load_model(path, arch="eca_resnet50", strict_arch=True)
    assert isinstance(load_model(path, arch="eca_resnet50"), models.ResNet)  # non-strict: the weights win


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint: torch.save writes a zip archive"):
        load_model(path)


def test_an_unreadable_file_and_a_bare_safetensors_file_are_named(tmp_path, monkeypatch):
    from ecanet import checkpoint
    path = tmp_path / "x.pth"
    torch.save({"state_dict": {}}, path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)   # as for a file of another user
    with pytest.raises(CheckpointError, match=r"cannot be read \(Permission denied\)"):
        load_model(path)
    monkeypatch.undo()
    weights = tmp_path / "export" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match=f"give the folder \\({re.escape(str(weights.parent))}\\)"):
        load_model(weights)


def test_truncated_checkpoint(tmp_path):
    path, _ = _official_file(tmp_path, "eca_resnet18_k3577")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pth")


def test_a_dict_without_weights(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "best_prec1": 1.0}, path)
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_model(path)


def test_damaged_layout_names_the_offending_keys(tmp_path):
    path, _ = _official_file(tmp_path, "eca_resnet18_k3577")
    obj = torch.load(path, weights_only=True)
    del obj["state_dict"]["module.layer2.1.bn2.running_mean"]
    obj["state_dict"]["module.layer2.1.extra.weight"] = torch.zeros(3)
    obj["state_dict"]["module.layer1.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "layer2.1.bn2.running_mean" in message and "layer2.1.extra.weight" in message
    assert "layer1.0.conv2.weight: file (64, 64, 1, 1) vs model (64, 64, 3, 3)" in message


@pytest.mark.parametrize("damage", ["an ECA-shaped weight of no ECA layer", "an even ECA kernel"])
def test_weights_shaped_like_eca_that_fit_no_eca_layer_are_named(tmp_path, damage):
    """A weight of ECA's shape (1, 1, k) is read as an ECA layer's kernel size: one that names no ECA layer of
    the network, or an even size, is a damaged file to report, not a KeyError or a ValueError to crash on."""
    path, _ = _official_file(tmp_path, "eca_resnet18_k3577")
    obj = torch.load(path, weights_only=True)
    if damage == "an even ECA kernel":
        obj["state_dict"]["module.layer2.0.eca.conv.weight"] = torch.zeros(1, 1, 4)
        expected = "layer2.0.eca.conv.weight: file (1, 1, 4) vs model (1, 1, 5)"
    else:
        obj["state_dict"]["module.layer4.1.eca2.conv.weight"] = torch.zeros(1, 1, 3)
        expected = "1 unexpected: layer4.1.eca2.conv.weight"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_model(path)


def test_strip_wrapper_prefixes():
    assert list(strip_wrapper_prefixes({"module._orig_mod.fc.weight": torch.zeros(1)})) == ["fc.weight"]
    assert list(strip_wrapper_prefixes({"fc.module.weight": torch.zeros(1)})) == ["fc.module.weight"]


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def broken_save(obj, f, *args, **kwargs):  # a disk that fills up half-way through the write
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    from ecanet.checkpoint import CheckpointSaveError
    with pytest.raises(CheckpointSaveError, match="the disk holding .* is full"):
        save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left behind


@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_mobilenet_v2"])
def test_headless_weights_load_as_the_headless_network(tmp_path, arch):
    """Weights saved from num_classes=0 (no classifier: self-supervised or feature-extraction weights) give the
    network without a classifier, returning the same pooled features."""
    torch.manual_seed(0)
    headless = models.create_model(arch, num_classes=0).eval()
    path = tmp_path / "headless.pth"
    torch.save(headless.state_dict(), path)
    model = load_model(path)
    assert model.num_classes == 0 and model.recipe.num_classes == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), headless(x))


def test_an_unknown_arch_is_named_before_the_file_is_read(tmp_path):
    with pytest.raises(models.UnknownModelError, match="did you mean eca_resnet50"):
        load_model(tmp_path / "not-read.pth", arch="eca_resnet5")
