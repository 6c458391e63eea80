import keras
import numpy as np
import pytest

from engine import precision
from engine.config import ModelConfig
from engine.models import BACKBONES, HEADS, build_model
from engine.models.batch_norm import FusedBatchNorm


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name,params", [("resnet18", 11_176_512), ("resnet34", 21_284_672)])
def test_hand_written_backbones_match_published_counts(name, params):
  backbone = BACKBONES.get(name).build((64, 64, 3), "fused")
  assert _trainable(backbone) == params
  assert backbone.output_shape == (None, 2, 2, 512)
  assert all(type(l) is not keras.layers.BatchNormalization for l in backbone.layers)


@pytest.mark.parametrize("head,extra", [("linear", 0), ("deep", 4), ("mlp", 2)])
def test_heads_give_float32_logits(head, extra):
  model = build_model(ModelConfig("tiny_resnet", head, num_outputs=3, image_size=(32, 32)))
  out = model(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("uint8"))
  assert out.shape == (2, 3) and out.dtype == "float32"
  dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
  assert len(dense) == 1 + extra


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_and_outputs_float32(policy):
  with precision.policy(policy):
    model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32)))
  bn = [l for l in model.get_layer("tiny_resnet").layers if isinstance(l, FusedBatchNorm)]
  assert bn and bn[0].compute_dtype == policy.split("_")[1]
  assert model(np.zeros((1, 32, 32, 3), "float32")).dtype == "float32"


def test_keras_batch_norm_variant_for_benchmarks():
  model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32), batch_norm="keras"))
  layers = model.get_layer("tiny_resnet").layers
  assert any(type(l) is keras.layers.BatchNormalization for l in layers)


def test_unknown_names_list_known_ones():
  with pytest.raises(KeyError, match="unknown backbone 'resnet9'; known: .*resnet18"):
    build_model(ModelConfig("resnet9"))
  with pytest.raises(KeyError, match="unknown head 'big'; known: deep, linear, mlp"):
    build_model(ModelConfig("tiny_resnet", "big", image_size=(32, 32)))


def test_contradictory_config_is_refused():
  with pytest.raises(ValueError, match="contradicts weights='imagenet'"):
    build_model(ModelConfig("resnet18", weights="imagenet", finetune="scratch"))
  with pytest.raises(ValueError, match="at least 16x16"):
    build_model(ModelConfig("tiny_resnet", image_size=(8, 8)))


def test_preprocessing_is_part_of_the_model():
  model = build_model(ModelConfig("resnet18", image_size=(32, 32)))
  layer = model.get_layer("preprocess")
  out = layer(np.full((1, 2, 2, 3), 255.0, "float32")).numpy()
  np.testing.assert_allclose(out[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) /
                             np.array([0.229, 0.224, 0.225]), rtol=1e-5)


def _trainable_names(model):
  return {w.path for w in model.trainable_weights}


def test_finetune_policies_train_exactly_the_intended_variables():
  def build(policy, n=20):
    return build_model(ModelConfig("tiny_resnet", "mlp", image_size=(32, 32), finetune=policy,
                                   finetune_last_n=n))
  full = build("full")
  head = {p for p in _trainable_names(full) if "dense" in p or "logits" in p}
  assert _trainable_names(build("scratch")) == _trainable_names(full)
  assert _trainable_names(build("frozen")) == head
  backbone = full.get_layer("tiny_resnet")
  last3 = {w.path for l in backbone.layers[-3:] for w in l.trainable_weights
           if "bn" not in l.name}
  assert _trainable_names(build("last_n", 3)) == head | last3
  # last_n counts layers: with N larger than the backbone, every non-BN layer trains.
  everything_but_bn = {p for p in _trainable_names(full) if "_bn/" not in p}
  assert _trainable_names(build("last_n", 10_000)) == everything_but_bn


def test_our_weights_round_trip(tmp_path):
  config = ModelConfig("tiny_resnet", image_size=(32, 32))
  original = build_model(config)
  original.set_weights([w + 0.1 for w in original.get_weights()])
  path = str(tmp_path / "model.weights.h5")
  original.save_weights(path)
  loaded = build_model(ModelConfig("tiny_resnet", image_size=(32, 32), weights=path,
                                   finetune="full"))
  x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
  np.testing.assert_allclose(loaded(x), original(x), rtol=1e-6)


def test_imagenet_weights_from_a_local_file_survive_the_bn_swap(tmp_path):
  # A stand-in for Keras' ImageNet file: a keras.applications model's own weights.
  reference = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                  input_shape=(32, 32, 3))
  reference.set_weights([w + 0.01 for w in reference.get_weights()])
  path = str(tmp_path / "mobilenet.weights.h5")
  reference.save_weights(path)
  model = build_model(ModelConfig("mobilenet_v3_small", image_size=(32, 32), weights="imagenet",
                                  weights_path=path, finetune="full"))
  backbone = model.get_layer(reference.name)
  assert any(isinstance(l, FusedBatchNorm) for l in backbone.layers)
  for ours, theirs in zip(backbone.get_weights(), reference.get_weights()):
    np.testing.assert_array_equal(ours, theirs)


def test_missing_imagenet_file_says_where_to_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError,
                     match=r"resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5.*models"):
    build_model(ModelConfig("resnet50", image_size=(32, 32), weights="imagenet", finetune="full"))
  with pytest.raises(ValueError, match="no ImageNet weights for resnet18"):
    build_model(ModelConfig("resnet18", image_size=(32, 32), weights="imagenet", finetune="full"))


@pytest.mark.parametrize("name,params", [("googlenet", 5_599_904), ("vgg11", 9_220_480),
                                         ("vgg13", 9_404_992)])
def test_more_hand_written_counts(name, params):
  assert _trainable(BACKBONES.get(name).build((32, 32, 3), "fused")) == params


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(BACKBONES.names()) - {"tiny_resnet"}))
def test_every_backbone_builds_with_fused_bn(name):
  """Under mixed_float16 only: the construction code is the same under every policy, and
  this one can fail in more ways (a layer that pins float32, logits not cast back)."""
  spec = BACKBONES.get(name)
  size = max(spec.min_image_size, 32)
  with precision.policy("mixed_float16"):
    model = build_model(ModelConfig(name, image_size=(size, size), num_outputs=2))
  out = model(np.zeros((1, size, size, 3), "float32"))
  assert out.shape == (1, 2) and out.dtype == "float32"
  backbone = model.get_layer(index=2).layers
  assert not any(type(l) is keras.layers.BatchNormalization for l in backbone)
  convs = [l for l in backbone if isinstance(l, keras.layers.Conv2D)]
  assert convs and all(l.compute_dtype == "float16" for l in convs)
  assert all(l.compute_dtype == "float16" for l in backbone if isinstance(l, FusedBatchNorm))


def test_bn_momentum_overrides_every_batch_norm_layer():
  model = build_model(ModelConfig("mobilenet_v3_small", image_size=(32, 32), bn_momentum=0.9))
  layers = []
  stack = list(model.layers)
  while stack:
    layer = stack.pop()
    stack.extend(getattr(layer, "layers", []))
    if isinstance(layer, keras.layers.BatchNormalization):
      layers.append(layer)
  assert layers and all(layer.momentum == 0.9 for layer in layers)
  default = build_model(ModelConfig("mobilenet_v3_small", image_size=(32, 32)))
  assert any(getattr(l, "momentum", None) == 0.999 for l in default.get_layer(index=2).layers)
