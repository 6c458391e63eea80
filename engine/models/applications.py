"""keras.applications backbones, rebuilt with the fused batch norm.

The Keras model is built as published (so its ImageNet weight file's layout applies),
then cloned with every `BatchNormalization` replaced by `FusedBatchNorm` and every
`Conv2D` by `MatmulGradConv2D` (same variables and config) and its weights copied
across: a loaded ImageNet file survives the swap. From scratch (no weight file), convs
feeding only a batch norm lose their redundant bias (ResNet50/101: 53 / 104 biases).
"""

from __future__ import annotations

import keras

from engine.models.batch_norm import FusedBatchNorm
from engine.models.matmul_conv import MatmulGradConv2D
from engine.models.registry import BackboneSpec, register_backbone


def swap_batch_norm(model: keras.Model, drop_conv_bias: bool = False) -> keras.Model:
  """A copy of `model` whose BatchNormalization layers run the fused kernel and whose
  Conv2D layers take `MatmulGradConv2D`'s weight gradients where those are faster.

  With `drop_conv_bias`, a conv whose only consumer is a batch norm loses its bias: BN
  subtracts the batch mean, so that bias has no effect on the output, yet its gradient is
  computed every step. Only for from-scratch training: ImageNet weight files carry it.
  """
  redundant = _convs_before_batch_norm(model) if drop_conv_bias else set()

  def clone(layer):
    config = layer.get_config()
    if type(layer) is keras.layers.BatchNormalization:
      return FusedBatchNorm.from_config(config)
    if type(layer) is keras.layers.Conv2D:
      if layer.name in redundant:
        config["use_bias"] = False
      return MatmulGradConv2D.from_config(config)
    return layer.__class__.from_config(config)

  swapped = keras.models.clone_model(model, clone_function=clone)
  for original, copy in zip(model.layers, swapped.layers):
    weights = original.get_weights()
    copy.set_weights(weights[:1] if original.name in redundant else weights)
  return swapped


def _convs_before_batch_norm(model: keras.Model) -> set[str]:
  """Names of the biased convs whose output feeds batch norms (with a beta) only."""
  names = set()
  for layer in model.layers:
    if type(layer) is not keras.layers.Conv2D or not layer.use_bias:
      continue
    consumers = [node.operation for node in layer._outbound_nodes]
    if consumers and all(isinstance(c, keras.layers.BatchNormalization) and c.center
                         for c in consumers):
      names.add(layer.name)
  return names


def _builder(constructor, **kwargs):
  def build(input_shape, batch_norm, weights=None):
    model = constructor(include_top=False, weights=weights, input_shape=input_shape, **kwargs)
    if batch_norm != "fused":
      return model
    return swap_batch_norm(model, drop_conv_bias=weights is None)
  return build


_APPS = [
    # name, constructor, default size, preprocessing, weights file, min size
    ("vgg16", keras.applications.VGG16, (224, 224), "caffe",
     "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 32, {}),
    ("vgg19", keras.applications.VGG19, (224, 224), "caffe",
     "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", 32, {}),
    ("resnet50", keras.applications.ResNet50, (224, 224), "caffe",
     "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 32, {}),
    ("resnet101", keras.applications.ResNet101, (224, 224), "caffe",
     "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", 32, {}),
    ("inception_v3", keras.applications.InceptionV3, (299, 299), "tf",
     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75, {}),
    ("inception_resnet_v2", keras.applications.InceptionResNetV2, (299, 299), "tf",
     "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", 75, {}),
    # MobileNetV3 and EfficientNetV2 scale their own inputs ([0, 255] in): "raw".
    ("mobilenet_v3_small", keras.applications.MobileNetV3Small, (224, 224), "raw",
     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", 32, {}),
    ("mobilenet_v3_large", keras.applications.MobileNetV3Large, (224, 224), "raw",
     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 32, {}),
    ("efficientnet_v2_b0", keras.applications.EfficientNetV2B0, (224, 224), "raw",
     "efficientnetv2-b0_notop.h5", 32, {}),
]

for _name, _ctor, _size, _prep, _file, _min, _kwargs in _APPS:
  register_backbone(BackboneSpec(
      _name, _builder(_ctor, **_kwargs), default_image_size=_size, preprocessing=_prep,
      imagenet_weights=True, keras_weights_file=_file, min_image_size=_min))
