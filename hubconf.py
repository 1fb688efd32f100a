"""torch.hub entry points, one per registered network:

    model = torch.hub.load(REPO_DIR, "eca_resnet50", source="local")                      # untrained
    model = torch.hub.load(REPO_DIR, "eca_resnet50", source="local", weights=PATH)        # a file or export folder

``weights`` is anything ``ecanet.load_model`` reads (the released files, ecanet checkpoints, export folders);
ecanet downloads nothing, so download the released files first (docs/model_zoo.md).
"""
dependencies = ["torch", "torchvision", "yaml", "safetensors"]

import ecanet  # noqa: E402  (torch.hub reads `dependencies` first)


def _entry_point(arch: str):
    def load(weights=None, num_classes=None, k_size=None, eca_impl: str = "auto", **kwargs):
        if weights is None:
            return ecanet.create_model(arch, num_classes=1000 if num_classes is None else num_classes, k_size=k_size,
                                       eca_impl=eca_impl, **kwargs)
        ignored = [name for name, value in (("num_classes", num_classes), ("k_size", k_size)) if value is not None]
        if ignored or kwargs:
            raise ValueError(f"{', '.join(ignored + list(kwargs))}: the network comes from weights={weights!r} "
                             f"(its classes and kernel sizes are the file's); leave these out, or drop weights to "
                             f"build an untrained network with them.")
        return ecanet.load_model(weights, arch=arch, strict_arch=True, eca_impl=eca_impl)

    load.__name__ = load.__qualname__ = arch
    load.__doc__ = (f"{arch}: untrained (``num_classes``, ``k_size``), or with ``weights=PATH`` (a checkpoint file "
                    f"or export folder) loaded, in evaluation mode, with the file's kernel sizes and recipe "
                    f"(``model.recipe``).")
    return load


for _arch in ecanet.list_models():
    globals()[_arch] = _entry_point(_arch)
del _arch
