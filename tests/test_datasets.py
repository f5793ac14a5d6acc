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
    expected = np.asarray(Image.fromarray(full).resize((24, 16), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    native = ImageLabelDataset(real)[0]
    assert native["image"].shape == (3, 32, 64)
    np.testing.assert_allclose(native["image"].permute(1, 2, 0).numpy(), real.read_image(0) / 127.5 - 1, atol=1e-6)
