"""Names and numbers that the command lines and the library share; importable without torch.

A leaf: it imports nothing of ecanet, so the networks (:mod:`ecanet.models`) and the option parser
(:mod:`ecanet.config`) can both use it without depending on each other.
"""
# How ECA layers compute (ecanet.models.EcaModule): 'auto' runs the fused Triton kernels on CUDA tensors where
# Triton imports (in ResNets' eager training, each block's BatchNorm with ECA as Triton kernels) and the PyTorch
# code elsewhere; 'fused' insists on the kernels, and runs BatchNorm with ECA as Triton kernels in every
# network's eager training; 'plain' is the PyTorch code.
ECA_IMPLEMENTATIONS = ("auto", "fused", "plain")

# ImageNet as the paper counts and trains it: 224x224 crops, 1000 classes.
IMAGENET_IMG_SIZE = 224     # pixels
IMAGENET_CLASSES = 1000
IMAGE_CHANNELS = 3          # the networks take RGB images
NETWORK_STRIDE = 32         # pixels: the networks' total stride, the smallest input whose last feature map is 1x1

# The paper's ImageNet preprocessing (torchvision's, as the official scripts use it): evaluation resizes the
# shorter side to 256 pixels and takes the centre 224x224 crop; pixels are normalised with these statistics.
IMAGENET_VAL_RESIZE = 256   # pixels
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BYTES_PER_GIB = 2 ** 30    # memory figures (peak_memory_gib and the like) are in GiB

# A training run's resumable checkpoint in its run directory (classification and detection), rewritten at every
# epoch's end and every --save-every-steps.
LAST_CHECKPOINT = "last.pth"
RUN_CONFIG = "config.yaml"   # a run directory's resolved options
METRICS_FILE = "metrics.jsonl"    # a run directory's records, one JSON object a line
DETECTION_FORMAT = "ecanet-detection-checkpoint"   # the "format" field of det_main.py's checkpoints
DETECTOR_WEIGHTS = "model.pth"   # a finished det_main.py run's detector, no training state

# ONNX export (ecanet.export): the opset written by default, and the oldest one accepted.
DEFAULT_ONNX_OPSET = 17
MIN_ONNX_OPSET = 13

# Detection (ecanet.detection): torchvision's detectors by name, and how many backbone stages can train
# (conv1 and layer1-layer4; the paper's mmdetection runs train 3, the stem and layer1 frozen).
DETECTOR_NAMES = ("faster_rcnn", "mask_rcnn", "retinanet")
MAX_TRAINABLE_LAYERS = 5
