import keras
import numpy as np
import pytest

from engine.models import BACKBONES, HEADS, ModelConfig, build_model
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
  keras.config.set_dtype_policy(policy)
  try:
    model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32)))
  finally:
    keras.config.set_dtype_policy("float32")
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
