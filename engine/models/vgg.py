"""VGG11/13 (configurations A and B of Simonyan & Zisserman), written here.

`vgg11`/`vgg13` are the published nets: 3x3 convs with bias and ReLU, no batch norm
(conv part 9,220,480 / 9,404,992 trainable parameters, as keras.applications' VGG16/19
are also BN-free). `vgg11_bn`/`vgg13_bn` add the (fused) BN after each conv, which
trains far more easily from scratch; their convs keep no bias, BN's beta replaces it.
"""

from __future__ import annotations

import keras

from engine.models.batch_norm import batch_norm_layer
from engine.models.matmul_conv import MatmulGradConv2D
from engine.models.registry import BackboneSpec, register_backbone

_CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
}


def _vgg(input_shape, batch_norm, layout, name, with_bn):
  inputs = keras.Input(input_shape)
  x, conv, pool = inputs, 0, 0
  for item in layout:
    if item == "M":
      pool += 1
      x = keras.layers.MaxPooling2D(2, name=f"pool{pool}")(x)
      continue
    conv += 1
    x = MatmulGradConv2D(item, 3, padding="same", use_bias=not with_bn,
                            kernel_initializer="he_normal", name=f"conv{conv}")(x)
    if with_bn:
      x = batch_norm_layer(batch_norm, momentum=0.9, epsilon=1e-5, name=f"conv{conv}_bn")(x)
    x = keras.layers.ReLU(name=f"conv{conv}_relu")(x)
  return keras.Model(inputs, x, name=name)


for _name, _layout in _CONFIGS.items():
  for _bn in (False, True):
    _full = f"{_name}_bn" if _bn else _name
    register_backbone(BackboneSpec(
        _full, lambda shape, bn, l=_layout, n=_full, b=_bn: _vgg(shape, bn, l, n, b),
        default_image_size=(224, 224), preprocessing="torch"))
