"""ResNet18/34 (basic blocks), written here because keras.applications has none.

He et al. 2015, v1 layout: 7x7/2 stem, 3x3/2 max-pool, four stages of basic blocks
(two 3x3 convs) with widths 64-128-256-512, a projection shortcut (1x1 conv + BN) where
the shape changes. Convs have no bias (BN follows). Trainable parameters without the
classifier: ResNet18 11,176,512; ResNet34 21,284,672 (torchvision's totals minus fc).
"""

from __future__ import annotations

import keras

from engine.models.batch_norm import batch_norm_layer
from engine.models.matmul_conv import MatmulGradConv2D
from engine.models.registry import BackboneSpec, register_backbone

_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _conv_bn(x, filters, kernel, stride, batch_norm, name, relu=True):
  x = MatmulGradConv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_conv")(x)
  x = batch_norm_layer(batch_norm, name=f"{name}_bn", **_BN)(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, stride, batch_norm, name):
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, filters, 1, stride, batch_norm, f"{name}_proj", relu=False)
  y = _conv_bn(x, filters, 3, stride, batch_norm, f"{name}_1")
  y = _conv_bn(y, filters, 3, 1, batch_norm, f"{name}_2", relu=False)
  y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return keras.layers.ReLU(name=f"{name}_out")(y)


def _resnet(input_shape, batch_norm, blocks, widths, name, stem_width=64):
  inputs = keras.Input(input_shape)
  x = _conv_bn(inputs, stem_width, 7, 2, batch_norm, "stem")
  x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
  for stage, (count, width) in enumerate(zip(blocks, widths)):
    for block in range(count):
      stride = 2 if block == 0 and stage > 0 else 1
      x = _basic_block(x, width, stride, batch_norm, f"stage{stage + 1}_block{block + 1}")
  return keras.Model(inputs, x, name=name)


register_backbone(BackboneSpec(
    "resnet18", lambda shape, bn: _resnet(shape, bn, (2, 2, 2, 2), (64, 128, 256, 512), "resnet18"),
    default_image_size=(224, 224), preprocessing="torch"))
register_backbone(BackboneSpec(
    "resnet34", lambda shape, bn: _resnet(shape, bn, (3, 4, 6, 3), (64, 128, 256, 512), "resnet34"),
    default_image_size=(224, 224), preprocessing="torch"))
# For tests: the same code path at a few thousand parameters.
register_backbone(BackboneSpec(
    "tiny_resnet", lambda shape, bn: _resnet(shape, bn, (1, 1), (8, 16), "tiny_resnet", stem_width=8),
    default_image_size=(32, 32), preprocessing="unit", min_image_size=16))
