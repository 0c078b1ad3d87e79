"""Images: decoding files (``images``), a folder of the user's (``folders``), the bundled photos and their
crops (``bundled``), reading dataset items (``datasets``), batches (``batching``) and decoding in worker
processes (``workers``). Images are float tensors (3, H, W) in [0, 1].
"""
from .batching import iter_batches
from .bundled import SAMPLE_NAMES, imagenet_classes, sample_crops, sample_images
from .datasets import dataset_identity, load_batch
from .folders import IMAGE_EXTENSIONS, ImageFolder
from .images import load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "SAMPLE_NAMES", "dataset_identity", "imagenet_classes",
           "iter_batches", "load_batch", "load_image", "sample_crops", "sample_images"]
