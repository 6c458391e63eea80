import os
import re

import pytest

from engine.data import schema
from engine.data.sharding import ShardConfig, ShardingError, shard_dataset
from engine.data.sharding import plan as planning
from engine.data.sharding.celeba import read_celeba
from engine.data.synthetic import ATTRIBUTE_NAMES
from tests.engine.data.sharding.helpers import copy_tree, replace_line


def test_reads_attributes_partition_identity_landmarks(celeba_dir):
  records, facts = read_celeba(celeba_dir)
  assert facts == {"attribute_names": list(ATTRIBUTE_NAMES), "has_identity": True,
                   "has_landmarks": True}
  assert [r.split for r in records].count("train") == 96
  first = records[0]
  with open(os.path.join(celeba_dir, "list_attr_celeba.txt")) as f:
    row = f.read().splitlines()[2].split()
  assert first.file_name == row[0]
  assert first.features[schema.ATTRIBUTES] == {n: v == "1" for n, v in zip(ATTRIBUTE_NAMES, row[1:])}
  assert set(first.features[schema.LANDMARKS]) == set(schema.LANDMARK_NAMES)
  assert first.where.endswith("list_attr_celeba.txt:3")


def test_subset_with_one_column_and_no_optional_files(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  os.remove(os.path.join(d, "identity_CelebA.txt"))
  os.remove(os.path.join(d, "list_landmarks_align_celeba.txt"))
  path = os.path.join(d, "list_attr_celeba.txt")
  lines = open(path).read().splitlines()
  male = ATTRIBUTE_NAMES.index("Male") + 1
  lines = lines[:1] + ["Male"] + [f"{l.split()[0]} {l.split()[male]}" for l in lines[2:]]
  open(path, "w").write("\n".join(lines) + "\n")
  records, facts = read_celeba(d)
  assert facts["attribute_names"] == ["Male"] and not facts["has_identity"]
  assert schema.IDENTITY not in records[0].features


@pytest.mark.parametrize("line,text,message", [
    (3, "000001.jpg 1 -1 1", "list_attr_celeba.txt:3: expected 5 columns"),
    (4, "000002.jpg 1 0 1 -1", "list_attr_celeba.txt:4: attribute Male must be 1 or -1"),
    (1, "7", "list_attr_celeba.txt:1: says 7 rows"),
])
def test_bad_attribute_rows_name_file_and_line(celeba_dir, tmp_path, line, text, message):
  d = copy_tree(celeba_dir, tmp_path / "c")
  replace_line(os.path.join(d, "list_attr_celeba.txt"), line, text)
  with pytest.raises(ShardingError, match=message):
    read_celeba(d)


def test_partition_naming_unknown_image(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  replace_line(os.path.join(d, "list_eval_partition.txt"), 5, "999999.jpg 0")
  with pytest.raises(ShardingError, match=r"list_eval_partition.txt:5: 999999.jpg is not in"):
    read_celeba(d)


def test_missing_partition_file(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  os.remove(os.path.join(d, "list_eval_partition.txt"))
  with pytest.raises(ShardingError, match="list_eval_partition.txt: missing"):
    read_celeba(d)


@pytest.mark.parametrize("file_name,line,bad_name", [
    ("list_attr_celeba.txt", 3, "../outside.jpg"),
    ("list_attr_celeba.txt", 5, "/etc/passwd"),
    ("list_attr_celeba.txt", 4, "sub/../../../outside.jpg"),
    ("list_eval_partition.txt", 2, "../img_align_celeba/000002.jpg"),
    ("identity_CelebA.txt", 7, "/tmp/000007.jpg"),
    ("list_landmarks_align_celeba.txt", 4, "../../000002.jpg"),
])
def test_image_names_leaving_the_image_dir_are_refused_before_any_read_or_write(
    celeba_dir, tmp_path, monkeypatch, file_name, line, bad_name):
  d = copy_tree(celeba_dir, tmp_path / "c")
  path = os.path.join(d, file_name)
  fields = open(path).read().splitlines()[line - 1].split()
  replace_line(path, line, " ".join([bad_name] + fields[1:]))
  monkeypatch.setattr(planning, "check_images", lambda *_: pytest.fail("images were read"))
  out = tmp_path / "out"
  with pytest.raises(ShardingError, match=re.escape(
      f"{path}:{line}: image name {bad_name!r} must be a relative path inside img_align_celeba/")):
    shard_dataset(ShardConfig("celeba", d, str(out)))
  assert not out.exists()


def test_images_linked_from_outside_are_refused_but_a_linked_image_dir_is_not(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  image = os.path.join(d, "img_align_celeba", "000003.jpg")
  outside = str(tmp_path / "secret.jpg")
  os.replace(image, outside)
  os.symlink(outside, image)
  with pytest.raises(ShardingError, match=re.escape(
      f"list_attr_celeba.txt:5: 000003.jpg resolves to {outside}, outside")):
    read_celeba(d)
  linked = copy_tree(celeba_dir, tmp_path / "linked")  # img_align_celeba/ on another disk
  os.replace(os.path.join(linked, "img_align_celeba"), str(tmp_path / "disk"))
  os.symlink(str(tmp_path / "disk"), os.path.join(linked, "img_align_celeba"))
  records, _ = read_celeba(linked)
  assert len(records) == 160
