"""Dataset specs, the adapter registry and the folder/demo adapters."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import folder_dataset, rgb, save
from s2rcli.data.datasets import (Layout, Sample, list_adapters, open_dataset, parse_spec, register_adapter)
from s2rcli.data.labels import identity_table
from s2rcli.data.torchdata import ImageLabelDataset
from s2rcli.errors import S2RError


def test_parse_spec(tmp_path):
    spec = parse_spec("demo:/data/cs?split=val&on_error=skip")
    assert spec.kind == "demo" and spec.path == Path("/data/cs") and dict(spec.options) == {
        "split": "val", "on_error": "skip"}
    assert parse_spec("demo:demo").options == {}
    bare = parse_spec(str(tmp_path))
    assert bare.kind == "folder" and bare.path == tmp_path
    with pytest.raises(S2RError, match="unknown dataset kind 'nope'"):
        parse_spec("nope:/x")
    with pytest.raises(S2RError, match="not a dataset spec or folder"):
        parse_spec(str(tmp_path / "missing"))
    with pytest.raises(S2RError, match="no path"):
        parse_spec("demo:")
    assert {"folder", "demo"} <= set(list_adapters())


def test_folder_pairs_and_reads(tmp_path):
    labels = {"a": np.array([[0, 1], [18, 255]], np.uint8).repeat(3, 0).repeat(4, 1),
              "sub/b": np.full((6, 8), 13, np.uint8)}
    images = folder_dataset(tmp_path, labels)
    ds = open_dataset(f"folder:{tmp_path}")
    assert len(ds) == 2 and ds.names == ["a", "sub/b"] and ds.has_labels and ds.kind == "folder"
    np.testing.assert_array_equal(ds.read_image(0), images["a"])
    np.testing.assert_array_equal(ds.read_label(0), labels["a"])
    # Without a manifest, folder labels are taken to be in the requested space already.
    np.testing.assert_array_equal(open_dataset(str(tmp_path), space="cityscapes34").read_label(0), labels["a"])
    # Stored in cityscapes19 (manifest.json or ?label_space=), read as cityscapes34: trainIds become
    # label ids: road 7, sidewalk 8, bicycle 33, car 26.
    ds34 = open_dataset(f"{tmp_path}?label_space=cityscapes19", space="cityscapes34")
    assert ds34.kind == "folder"
    expected = np.array([[7, 8], [33, 255]], np.uint8).repeat(3, 0).repeat(4, 1)
    np.testing.assert_array_equal(ds34.read_label(0), expected)
    assert (ds34.read_label(1) == 26).all()
    assert len(open_dataset(str(tmp_path), limit=1)) == 1


def test_folder_without_labels_and_flat_folder(tmp_path):
    for k in range(3):
        save(rgb(k), tmp_path / "flat" / f"{k}.jpg")
    ds = open_dataset(str(tmp_path / "flat"))
    assert len(ds) == 3 and not ds.has_labels and ds.read_image(2).shape == (6, 8, 3)
    with pytest.raises(S2RError, match="has no labels"):
        ds.read_label(0)
    with pytest.raises(S2RError, match="has no labels"):
        ImageLabelDataset(ds)
    item = ImageLabelDataset(ds, labels=False)[1]
    assert set(item) == {"image", "index"} and item["image"].shape == (3, 6, 8)
    # Images directly in PATH, labels in PATH/labels/.
    save(np.full((6, 8), 5, np.uint8), tmp_path / "flat" / "labels" / "1.png")
    with pytest.raises(S2RError, match="have no label file: 0, 2"):
        open_dataset(str(tmp_path / "flat"))
    paired = open_dataset(str(tmp_path / "flat"), on_error="skip")
    assert paired.names == ["1"] and (paired.read_label(0) == 5).all()


def test_robust_input(tmp_path):
    label = np.zeros((6, 8), np.uint8)
    folder_dataset(tmp_path / "missing", {"a": label}, images=["a", "b"])
    with pytest.raises(S2RError, match=r"1 image\(s\) .* have no label file: b"):
        open_dataset(str(tmp_path / "missing"))
    assert open_dataset(str(tmp_path / "missing"), on_error="skip").names == ["a"]

    bad = label.copy()
    bad[0, :3] = 77
    folder_dataset(tmp_path / "values", {"a": bad})
    with pytest.raises(S2RError, match=r"a\.png has raw values outside .*: 77 \(3 px\)"):
        open_dataset(str(tmp_path / "values")).read_label(0)
    ds = open_dataset(f"folder:{tmp_path / 'values'}?on_error=skip")
    out = ds.read_label(0)
    assert (out[0, :3] == 255).all() and (out[1:] == 0).all() and ds.unknown_pixels == {77: 3}

    folder_dataset(tmp_path / "size", {"a": label})
    save(np.zeros((3, 4), np.uint8), tmp_path / "size" / "labels" / "a.png")
    with pytest.raises(S2RError, match=r"is 4x3 but image .* is 8x6"):
        open_dataset(str(tmp_path / "size")).read_label(0)
    assert open_dataset(str(tmp_path / "size"), mismatch="resize").read_label(0).shape == (6, 8)
    with pytest.raises(S2RError, match="different size"):
        open_dataset(str(tmp_path / "size"), mismatch="skip")

    folder_dataset(tmp_path / "trunc", {"a": label})
    data = (tmp_path / "trunc" / "images" / "a.png").read_bytes()
    (tmp_path / "trunc" / "images" / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(S2RError, match=r"cannot read image .*a\.png"):
        open_dataset(str(tmp_path / "trunc")).read_image(0)

    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(S2RError, match="expected PATH/images"):
        open_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(S2RError, match="unknown option"):
        open_dataset(f"folder:{tmp_path / 'values'}?colour=blue")
    with pytest.raises(S2RError, match="has no splits"):
        open_dataset(f"folder:{tmp_path / 'values'}?split=train")


def test_register_adapter_rejects_duplicates_and_works(tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        register_adapter("folder")(lambda *a: None)
    name = "toykind_for_test"

    @register_adapter(name, layout="PATH/x.png")
    def _open(root, split, options, space):
        return Layout([Sample("x", root / "x.png", root / "x.png")], identity_table("cityscapes19"))

    save(np.full((4, 5), 9, np.uint8), tmp_path / "x.png")
    ds = open_dataset(f"{name}:{tmp_path}")
    assert ds.names == ["x"] and (ds.read_label(0) == 9).all() and ds.read_image(0).shape == (4, 5, 3)


def test_demo_adapter_and_torch_dataset(tmp_path):
    from s2rcli.data.demo import write_demo_world

    with pytest.raises(S2RError, match="s2r prepare demo"):
        open_dataset(f"demo:{tmp_path}")
    write_demo_world(tmp_path, n_synthetic=3, n_real=2, n_real_val=1, size=(32, 64), workers=1)
    syn = open_dataset(f"demo:{tmp_path}")
    real = open_dataset(f"demo:{tmp_path}?split=real")
    assert (syn.split, len(syn), real.split, len(real)) == ("synthetic", 3, "real", 2)
    assert syn.names == ["00000", "00001", "00002"] and real.has_labels
    with pytest.raises(S2RError, match="valid splits"):
        open_dataset(f"demo:{tmp_path}?split=test")
    torch_ds = ImageLabelDataset(real, size=(16, 24))
    item = torch_ds[1]
    assert item["index"] == 1 and item["image"].dtype == torch.float32 and item["image"].shape == (3, 16, 24)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["label"].dtype == torch.int64 and item["label"].shape == (16, 24)
    full = real.read_label(1)
    # a 2:1 frame at 16x24 is scaled to cover it (16x32), aspect kept, and its centre 24 columns cut out
    expected = np.asarray(Image.fromarray(full).resize((32, 16), Image.Resampling.NEAREST))[:, 4:28]
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    native = ImageLabelDataset(real)[0]
    assert native["image"].shape == (3, 32, 64)
    np.testing.assert_allclose(native["image"].permute(1, 2, 0).numpy(), real.read_image(0) / 127.5 - 1, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Adapters for the published datasets: tiny fixtures in the real layouts, checked pixel by pixel.

import fixtures_data as fx  # noqa: E402


def _expect(raw: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """The hand-written expectation: each raw value through ``mapping`` (the test's own, not the module's)."""
    out = np.full(raw.shape, 255, np.uint8)
    for value, target in mapping.items():
        out[raw == value] = target
    return out


def test_all_kinds_registered():
    assert {"cityscapes", "gta5", "synscapes", "synthia", "mapillary", "carla", "folder", "demo"} <= set(list_adapters())


CS_RAW = fx.blocks([[7, 8, 11, 26], [0, 24, 33, 12]])
CS_TO_19 = {7: 0, 8: 1, 11: 2, 26: 13, 0: 255, 24: 11, 33: 18, 12: 3}


def test_cityscapes(tmp_path):
    fx.cityscapes(tmp_path, CS_RAW)
    ds = open_dataset(f"cityscapes:{tmp_path}")
    assert ds.split == "train" and ds.names == ["aachen/aachen_000000_000019", "bochum/bochum_000012_000005"]
    assert len(ds) == 2 and ds.has_labels  # the color/instanceIds files are not taken for labels
    np.testing.assert_array_equal(ds.read_image(1), fx.rgb(1))
    np.testing.assert_array_equal(ds.read_label(0), _expect(CS_RAW, CS_TO_19))
    np.testing.assert_array_equal(ds.read_label(1), _expect(np.roll(CS_RAW, 1, axis=1), CS_TO_19))
    np.testing.assert_array_equal(open_dataset(f"cityscapes:{tmp_path}", "cityscapes34").read_label(0), CS_RAW)
    val = open_dataset(f"cityscapes:{tmp_path}?split=val")
    assert val.names == ["lindau/lindau_000001_000002"]
    np.testing.assert_array_equal(val.read_label(0), _expect(np.roll(CS_RAW, 2, axis=1), CS_TO_19))
    test = open_dataset(f"cityscapes:{tmp_path}?split=test")
    assert len(test) == 1 and not test.has_labels
    with pytest.raises(S2RError, match="should point at the folder that holds leftImg8bit"):
        open_dataset(f"cityscapes:{tmp_path / 'leftImg8bit'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(S2RError, match=r"expected PATH/leftImg8bit/train/<city>/\*_leftImg8bit.png"):
        open_dataset(f"cityscapes:{tmp_path / 'empty'}")


GTA_RAW = fx.blocks([[7, 21, 23, 26], [1, 17, 20, 32]])
GTA_TO_19 = {7: 0, 21: 8, 23: 10, 26: 13, 1: 255, 17: 5, 20: 7, 32: 17}


def test_gta5_palette_labels_gaps_and_size_mismatch(tmp_path):
    fx.gta5(tmp_path, GTA_RAW)
    from PIL import Image as PILImage

    assert PILImage.open(tmp_path / "labels" / "00001.png").mode == "P"
    ds = open_dataset(f"gta5:{tmp_path}")
    assert ds.names == ["00001", "00003", "00004"] and ds.mismatch == "resize"
    np.testing.assert_array_equal(ds.read_label(0), _expect(GTA_RAW, GTA_TO_19))
    np.testing.assert_array_equal(ds.read_label(1), _expect(np.flipud(GTA_RAW), GTA_TO_19))
    # 00004's label is 4x3: brought to the image's 8x6 with nearest, and reported.
    small = _expect(GTA_RAW[::2, ::2], GTA_TO_19)
    np.testing.assert_array_equal(ds.read_label(2), small.repeat(2, 0).repeat(2, 1))
    assert ds.resized_labels == ["00004"]
    skipping = open_dataset(f"gta5:{tmp_path}?mismatch=skip")
    assert skipping.names == ["00001", "00003"] and skipping.skipped_mismatched == ["00004"]
    with pytest.raises(S2RError, match="00004.png is 4x3 but image"):
        open_dataset(f"gta5:{tmp_path}?mismatch=fail").read_label(2)
    (tmp_path / "labels" / "00003.png").unlink()
    with pytest.raises(S2RError, match=r"have no label file: 00003"):
        open_dataset(f"gta5:{tmp_path}")
    assert open_dataset(f"gta5:{tmp_path}", on_error="skip").names == ["00001", "00004"]


def test_synscapes(tmp_path):
    fx.synscapes(tmp_path, CS_RAW)
    ds = open_dataset(f"synscapes:{tmp_path}")
    assert ds.names == ["1", "10", "2"] and ds.has_labels
    np.testing.assert_array_equal(ds.read_label(1), _expect(np.roll(CS_RAW, 10, axis=0), CS_TO_19))
    np.testing.assert_array_equal(ds.read_image(2), fx.rgb(2))
    with pytest.raises(S2RError, match="rgb, rgb-2k"):
        open_dataset(f"synscapes:{tmp_path}?images=rgb-4k")


SYNTHIA_RAW = fx.blocks([[3, 4, 2, 21], [1, 22, 10, 8]])
SYNTHIA_TO_19 = {3: 0, 4: 1, 2: 2, 21: 3, 1: 10, 22: 255, 10: 11, 8: 13}


def test_synthia_16bit_labels(tmp_path):
    fx.synthia(tmp_path, SYNTHIA_RAW)
    ds = open_dataset(f"synthia:{tmp_path}")
    assert ds.names == ["0000000", "0000001"]
    raw = ds.read_raw_label(0)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, SYNTHIA_RAW)  # the class channel, not the instance ids
    np.testing.assert_array_equal(ds.read_label(0), _expect(SYNTHIA_RAW, SYNTHIA_TO_19))
    np.testing.assert_array_equal(ds.read_label(1), _expect(np.roll(SYNTHIA_RAW, 1, axis=1), SYNTHIA_TO_19))
    # The 16- and 13-class evaluation spaces, numbered compactly.
    s16 = open_dataset(f"synthia:{tmp_path}", "synthia16").read_label(0)
    np.testing.assert_array_equal(s16, _expect(SYNTHIA_RAW, {3: 0, 4: 1, 2: 2, 21: 3, 1: 9, 10: 10, 8: 12}))
    s13 = open_dataset(f"synthia:{tmp_path}", "synthia13").read_label(0)
    np.testing.assert_array_equal(s13, _expect(SYNTHIA_RAW, {3: 0, 4: 1, 2: 2, 1: 6, 10: 7, 8: 9}))


MAPILLARY_RAW = fx.blocks([[13, 7, 55, 44], [65, 30, 19, 2]])


def test_mapillary_minimal_and_liberal(tmp_path):
    from s2rcli.data.tables import MAPILLARY_V12_CLASSES

    fx.mapillary(tmp_path, MAPILLARY_RAW, MAPILLARY_V12_CLASSES)
    ds = open_dataset(f"mapillary:{tmp_path}")
    assert ds.split == "training" and ds.names == ["-abc_Z01", "xyz"] and ds.read_image(0).shape == (6, 8, 3)
    minimal = {13: 0, 7: 255, 55: 13, 44: 255, 65: 255, 30: 8, 19: 11, 2: 1}
    np.testing.assert_array_equal(ds.read_label(0), _expect(MAPILLARY_RAW, minimal))
    liberal = open_dataset(f"mapillary:{tmp_path}?mapping=liberal")
    np.testing.assert_array_equal(liberal.read_label(0), _expect(MAPILLARY_RAW, {**minimal, 7: 0, 44: 5}))
    assert len(open_dataset(f"mapillary:{tmp_path}?split=validation")) == 1
    with pytest.raises(S2RError, match="minimal, liberal"):
        open_dataset(f"mapillary:{tmp_path}?mapping=generous")
    (tmp_path / "config_v1.2.json").write_text('{"labels": [{"name": "x"}]}')
    with pytest.raises(S2RError, match="v1.2"):
        open_dataset(f"mapillary:{tmp_path}")


def test_carla_raw_tags_both_versions(tmp_path):
    new = fx.blocks([[11, 11, 24, 3], [1, 14, 10, 22]])
    fx.carla_raw(tmp_path / "new", new)
    ds = open_dataset(f"carla:{tmp_path / 'new'}")
    assert ds.names == ["episode_000/000120", "episode_000/000121"] and ds.table.name.startswith("carla 0.9.14")
    np.testing.assert_array_equal(ds.read_label(0), _expect(new, {11: 10, 24: 0, 3: 2, 1: 0, 14: 13, 10: 9}))

    old = fx.blocks([[13, 13, 1, 9], [7, 7, 10, 6]])
    fx.carla_raw(tmp_path / "old", old)
    ds = open_dataset(f"carla:{tmp_path / 'old'}")  # sky 13 at the top, road 7 at the bottom: 0.9.13
    assert ds.table.name.startswith("carla 0.9.13")
    np.testing.assert_array_equal(ds.read_label(1), _expect(old, {13: 10, 1: 2, 9: 8, 7: 0, 10: 13, 6: 0}))
    forced = open_dataset(f"carla:{tmp_path / 'old'}?version=0.9.14")
    np.testing.assert_array_equal(forced.read_label(0), _expect(old, {13: 12, 1: 0, 9: 8, 7: 6, 10: 9, 6: 5}))
    with pytest.raises(S2RError, match=r"outside the carla 0.9.13 tags table: 24"):
        open_dataset(f"carla:{tmp_path / 'new'}?version=0.9.13").read_label(0)


def test_carla_palette_colours(tmp_path):
    colours = [[(70, 130, 180), (128, 64, 128), (145, 170, 100), (152, 251, 152)],
               [(0, 0, 142), (157, 234, 50), (100, 40, 40), (1, 2, 3)]]
    image = np.array(colours, np.uint8).repeat(3, 0).repeat(2, 1)
    fx.carla_palette(tmp_path, image)
    expected = np.array([[10, 0, 9, 9], [13, 0, 4, 255]], np.uint8).repeat(3, 0).repeat(2, 1)
    ds = open_dataset(f"carla:{tmp_path}?on_error=skip")
    assert ds.names == ["000001", "000002"]
    np.testing.assert_array_equal(ds.read_label(0), expected)
    import pickle  # datasets travel to DataLoader and remap worker processes

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds)).read_label(1), expected)
    assert sum(ds.unknown_pixels.values()) == 6
    with pytest.raises(S2RError, match="outside the carla CityScapesPalette"):
        open_dataset(f"carla:{tmp_path}").read_label(0)
    v14 = open_dataset(f"carla:{tmp_path}?version=0.9.14&on_error=skip").read_label(0)
    expected14 = expected.copy()
    expected14[:3, 4:6] = 255  # 0.9.13's terrain colour is not in the 0.9.14 palette
    expected14[3:, 4:6] = 255  # nor is its fence colour
    np.testing.assert_array_equal(v14, expected14)


def test_folder_labels_none_reads_images_only(tmp_path):
    """Generated samples (name_s00.png) need not pair with labels when only the images are read."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a_s00", "a_s01"):
        Image.fromarray(np.full((4, 6, 3), 7, np.uint8)).save(tmp_path / "images" / f"{name}.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "labels" / "a.png")
    images = open_dataset(f"folder:{tmp_path}?labels=none")
    assert sorted(images.names) == ["a_s00", "a_s01"] and not images.has_labels
    assert images.read_image(0).shape == (4, 6, 3)
    with pytest.raises(S2RError, match="labels='yes' is not known"):
        open_dataset(f"folder:{tmp_path}?labels=yes")
