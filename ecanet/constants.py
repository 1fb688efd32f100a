"""Names and numbers that the command lines and the library share; importable without torch.

A leaf: it imports nothing of ecanet, so the networks (:mod:`ecanet.models`) and the option parser
(:mod:`ecanet.config`) can both use it without depending on each other.
"""
# How ECA layers compute (ecanet.models.EcaModule): 'auto' runs the fused Triton kernels on CUDA tensors where
# Triton imports and the PyTorch code elsewhere; 'fused' insists on the kernels; 'plain' is the PyTorch code.
ECA_IMPLEMENTATIONS = ("auto", "fused", "plain")

# ImageNet as the paper counts and trains it: 224x224 crops, 1000 classes.
IMAGENET_IMG_SIZE = 224     # pixels
IMAGENET_CLASSES = 1000
NETWORK_STRIDE = 32         # pixels: the networks' total stride, the smallest input whose last feature map is 1x1
