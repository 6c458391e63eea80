"""GoogLeNet (Inception v1, Szegedy et al. 2014) with batch norm, written here.

Every conv is conv (no bias) + BN + ReLU; no local response normalisation (LRN has no
XLA lowering in fp16 and BN makes it redundant); no auxiliary heads. As in the widely
used torchvision variant, the "5x5" branch uses a 3x3 conv: 5,599,904 trainable
parameters without the classifier, the figure the seeds' comparisons used.
"""

from __future__ import annotations

import keras

from engine.models.batch_norm import batch_norm_layer
from engine.models.matmul_conv import MatmulGradConv2D
from engine.models.registry import BackboneSpec, register_backbone

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per inception block.
_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _conv(x, filters, kernel, batch_norm, name, stride=1):
  x = MatmulGradConv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_conv")(x)
  x = batch_norm_layer(batch_norm, epsilon=1e-3, name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def _inception(x, widths, batch_norm, name):
  b1, r3, b3, r5, b5, pool_proj = widths
  branch1 = _conv(x, b1, 1, batch_norm, f"{name}_1x1")
  branch2 = _conv(_conv(x, r3, 1, batch_norm, f"{name}_3x3r"), b3, 3, batch_norm, f"{name}_3x3")
  branch3 = _conv(_conv(x, r5, 1, batch_norm, f"{name}_5x5r"), b5, 3, batch_norm, f"{name}_5x5")
  pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
  branch4 = _conv(pooled, pool_proj, 1, batch_norm, f"{name}_poolproj")
  return keras.layers.Concatenate(name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def _googlenet(input_shape, batch_norm):
  inputs = keras.Input(input_shape)
  x = _conv(inputs, 64, 7, batch_norm, "conv1", stride=2)
  x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
  x = _conv(x, 64, 1, batch_norm, "conv2")
  x = _conv(x, 192, 3, batch_norm, "conv3")
  x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
  for name, widths in _BLOCKS.items():
    if name == "4a":
      x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    if name == "5a":
      x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name="pool4")(x)
    x = _inception(x, widths, batch_norm, f"inception{name}")
  return keras.Model(inputs, x, name="googlenet")


register_backbone(BackboneSpec("googlenet", _googlenet, default_image_size=(224, 224),
                               preprocessing="torch"))
