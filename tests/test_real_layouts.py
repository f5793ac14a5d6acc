"""Real dataset files: CARLA greyscale tags and CarlaScapes, Mapillary v1.1/v2.0, Cityscapes as JPEG,
all-ignore outputs, and remap retries. Every dataset here is written in the layout and file format of
the real release (tiny images)."""

import json

import fixtures_data as fx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data import datasets
from s2rcli.data.datasets import open_dataset
from s2rcli.data.labels import IGNORE, get_label_space
from s2rcli.data.remap import remap_dataset
from s2rcli.data.tables import (
    MAPILLARY_MINIMAL_TO_CS19,
    MAPILLARY_TABLES,
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V20_CLASSES,
    MAPILLARY_V20_MAPPINGS,
    mapillary_v20_table,
)
from s2rcli.errors import S2RError

runner = CliRunner()
CS19 = get_label_space("cityscapes19")


def _expect(raw, mapping):
    out = np.full(raw.shape, IGNORE, np.uint8)
    for value, train_id in mapping.items():
        out[raw == value] = train_id
    return out


@pytest.fixture
def notes(monkeypatch):
    """The warnings open_dataset prints (adapter notes and the rest), one string each."""
    said = []
    monkeypatch.setattr(datasets, "warn", said.append)
    return said


# --------------------------------------------------------------------------------------------------
# CARLA: tags in a single-channel greyscale PNG (8- or 16-bit), CarlaScapes' one-folder layout

# CarlaScapes-like 0.9.14 tags (1-25): sky 11, road lines 24, buildings 3, road 1, car 14, terrain 10, ground 25
GREY_TAGS = fx.blocks([[11, 11, 24, 3], [1, 14, 10, 25]])
GREY_EXPECTED = _expect(GREY_TAGS, {11: 10, 24: 0, 3: 2, 1: 0, 14: 13, 10: 9})


def _carla_grey(root, tags, dtype=np.uint8, episode="episode_000"):
    for k, frame in enumerate(["000120", "000121"]):
        fx.save(fx.rgb(k), root / episode / "rgb" / f"{frame}.png")
        fx.save(tags.astype(dtype), root / episode / "semantic" / f"{frame}.png")


@pytest.mark.parametrize("dtype, mode", [(np.uint8, "L"), (np.uint16, "I;16")])
def test_carla_greyscale_tags_are_read_as_tags(tmp_path, dtype, mode, notes):
    _carla_grey(tmp_path, GREY_TAGS, dtype)
    with Image.open(tmp_path / "episode_000" / "semantic" / "000120.png") as image:
        assert image.mode.startswith(mode[0])  # really a single-channel file, as the exports write it
    ds = open_dataset(f"carla:{tmp_path}")
    assert ds.table.name == "carla 0.9.14 tags"
    np.testing.assert_array_equal(ds.read_label(0), GREY_EXPECTED)
    np.testing.assert_array_equal(open_dataset(f"carla:{tmp_path}?labels=raw").read_label(1), GREY_EXPECTED)
    assert any("0.9.14" in note for note in notes)


def test_carla_greyscale_old_tag_set_and_grey_rgb(tmp_path):
    old = fx.blocks([[13, 13, 1, 9], [7, 7, 10, 6]])           # 0.9.13: sky 13 at the top, road 7 at the bottom
    _carla_grey(tmp_path / "old", old)
    ds = open_dataset(f"carla:{tmp_path / 'old'}")
    assert ds.table.name == "carla 0.9.13 tags"
    np.testing.assert_array_equal(ds.read_label(0), _expect(old, {13: 10, 1: 2, 9: 8, 7: 0, 10: 13, 6: 0}))
    _carla_grey(tmp_path / "rgb", np.repeat(GREY_TAGS[..., None], 3, axis=2))   # tags in all three channels
    np.testing.assert_array_equal(open_dataset(f"carla:{tmp_path / 'rgb'}").read_label(0), GREY_EXPECTED)


def test_carla_errors_show_the_values_in_the_file(tmp_path):
    """Colours outside the palette are named as the file holds them, never as an internal placeholder."""
    colours = [[(70, 130, 180), (128, 64, 128), (1, 2, 3), (1, 2, 3)],
               [(0, 0, 142), (157, 234, 50), (9, 9, 9), (9, 9, 9)]]
    fx.carla_palette(tmp_path / "pal", np.array(colours, np.uint8).repeat(3, 0).repeat(2, 1))
    with pytest.raises(S2RError) as err:
        open_dataset(f"carla:{tmp_path / 'pal'}").read_label(0)
    assert "rgb(1,2,3) (12 px), rgb(9,9,9) (12 px)" in err.value.message and "65535" not in err.value.message
    assert "?labels=raw" in err.value.hint
    ds = open_dataset(f"carla:{tmp_path / 'pal'}?on_error=skip")
    ds.read_label(0)
    assert sum(ds.unknown_pixels.values()) == 24
    manifest = remap_dataset(f"carla:{tmp_path / 'pal'}?on_error=skip", tmp_path / "out", workers=1)
    assert manifest["unknown_pixels"] == {"rgb(1,2,3)": 24, "rgb(9,9,9)": 24}

    # Greyscale tags forced to be read as colours: refused when the dataset is opened, with the values found.
    _carla_grey(tmp_path / "grey", GREY_TAGS)
    with pytest.raises(S2RError) as err:
        open_dataset(f"carla:{tmp_path / 'grey'}?labels=palette&on_error=skip")
    assert "rgb(11,11,11)" in err.value.message and "65535" not in err.value.message
    assert "?labels=raw" in err.value.hint


def test_carla_every_pixel_ignore_is_an_error_even_with_skip(tmp_path):
    """CityScapesPalette colours read as raw tags map to nothing: an error, not a run of all-255 labels."""
    colours = np.array([[(70, 130, 180), (128, 64, 128)], [(0, 0, 142), (107, 142, 35)]], np.uint8)
    fx.carla_palette(tmp_path, colours.repeat(3, 0).repeat(4, 1))
    with pytest.raises(S2RError) as err:
        open_dataset(f"carla:{tmp_path}?labels=raw&version=0.9.14&on_error=skip")
    assert "maps to a cityscapes19 class when read as carla 0.9.14 tags" in err.value.message
    assert "128 (" in err.value.message
    assert "?labels=palette" in err.value.hint
    result = runner.invoke(app, ["--quiet", "prepare", "remap", f"carla:{tmp_path}?labels=raw&version=0.9.14",
                                 "--out", str(tmp_path / "out"), "--on-error", "skip"])
    assert result.exit_code == 1 and "no pixel of" in result.output


def test_carla_version_note_once_per_dataset_in_full(tmp_path, notes):
    _carla_grey(tmp_path, GREY_TAGS)
    for _ in range(3):
        open_dataset(f"carla:{tmp_path}")
    open_dataset(f"carla:{tmp_path}?limit=1")
    version_notes = [n for n in notes if "CARLA 0.9.14 tags" in n]
    assert len(version_notes) == 1
    assert "\n" not in version_notes[0] and version_notes[0].endswith("?version=0.9.13 or ?version=0.9.14 to choose")


def test_carlascapes_one_folder_layout(tmp_path):
    """CarlaScapes: <name>_img.png beside <name>_labelIds.png (greyscale 0.9.14 tags), in town folders."""
    for k, (town, frame) in enumerate([("Town01", "000001"), ("Town01", "000002"), ("Town02", "000001")]):
        fx.save(fx.rgb(k), tmp_path / town / f"{frame}_img.png")
        fx.save(np.roll(GREY_TAGS, k, axis=1), tmp_path / town / f"{frame}_labelIds.png")
    fx.save(fx.rgb(9), tmp_path / "Town02" / "000009_img.png")             # no label: fails by default
    with pytest.raises(S2RError, match="Town02/000009"):
        open_dataset(f"carla:{tmp_path}")
    ds = open_dataset(f"carla:{tmp_path}?on_error=skip")
    assert ds.names == ["Town01/000001", "Town01/000002", "Town02/000001"]
    assert ds.table.name == "carla 0.9.14 tags"
    np.testing.assert_array_equal(ds.read_label(2), np.roll(GREY_EXPECTED, 2, axis=1))
    np.testing.assert_array_equal(ds.read_image(1), fx.rgb(1))


# --------------------------------------------------------------------------------------------------
# Cityscapes converted to JPEG


def test_cityscapes_jpg_images_with_one_fid_note(tmp_path, notes):
    raw = fx.blocks([[7, 8, 11, 26], [23, 0, 24, 33]])
    fx.cityscapes(tmp_path, raw)
    for png in (tmp_path / "leftImg8bit").rglob("*.png"):
        Image.open(png).save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    ds = open_dataset(f"cityscapes:{tmp_path}")
    assert ds.names == ["aachen/aachen_000000_000019", "bochum/bochum_000012_000005"]
    assert ds.samples[0].image.suffix == ".jpg" and ds.read_image(0).shape == (6, 8, 3)
    np.testing.assert_array_equal(ds.read_label(0), _expect(raw, {7: 0, 8: 1, 11: 2, 26: 13, 23: 10, 24: 11, 33: 18}))
    open_dataset(f"cityscapes:{tmp_path}?limit=1")
    assert len([n for n in notes if "JPEG" in n and "FID" in n]) == 1


# --------------------------------------------------------------------------------------------------
# Mapillary Vistas v1.1 (config.json) and v2.0 (config_v2.0.json, 124 classes)

MAPILLARY_RAW = fx.blocks([[13, 7, 55, 44], [65, 30, 19, 2]])


def _mapillary_config(path, names):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"labels": [{"name": n, "readable": n, "color": [k % 256, 0, 0], "instances": False,
                                            "evaluate": True} for k, n in enumerate(names)]}))


def test_mapillary_v11_config_json(tmp_path, notes):
    """v1.1: labels directly under the split, the 66 classes in config.json; read with no warning."""
    _mapillary_config(tmp_path / "config.json", MAPILLARY_V12_CLASSES)
    for k, name in enumerate(["a", "b"]):
        fx.save(fx.rgb(k), tmp_path / "training" / "images" / f"{name}.jpg")
        fx.save(np.roll(MAPILLARY_RAW, k, axis=1), tmp_path / "training" / "labels" / f"{name}.png", mode="P")
    ds = open_dataset(f"mapillary:{tmp_path}")
    np.testing.assert_array_equal(ds.read_label(0), _expect(MAPILLARY_RAW, MAPILLARY_MINIMAL_TO_CS19))
    assert notes == []
    _mapillary_config(tmp_path / "config.json", MAPILLARY_V20_CLASSES)
    with pytest.raises(S2RError, match=r"config.json lists 124 classes .* v1.1/v1.2's 66"):
        open_dataset(f"mapillary:{tmp_path}")


def _mapillary_v20(root, names):
    _mapillary_config(root / "config_v2.0.json", names)
    ids = {n: k for k, n in enumerate(names)}
    raw = fx.blocks([[ids["construction--flat--road"], ids["human--person--individual"],
                      ids["object--traffic-light--general-upright"], ids["marking--continuous--dashed"]],
                     [ids["nature--sky"], ids["object--vehicle--vehicle-group"], ids["void--unlabeled"],
                      ids["construction--flat--bike-lane"]]])
    for k, name in enumerate(["x1", "x2"]):
        fx.save(fx.rgb(k), root / "training" / "images" / f"{name}.jpg")
        fx.save(raw, root / "training" / "v2.0" / "labels" / f"{name}.png", mode="P")
    return raw


def test_mapillary_v20_mapped_by_class_name(tmp_path, notes):
    # The ids come from the dataset's own config: a shuffled class order must not change the classes read.
    names = list(MAPILLARY_V20_CLASSES)
    np.random.default_rng(0).shuffle(names)
    raw = _mapillary_v20(tmp_path, names)
    minimal = np.array([[0, 11, 6, 0], [10, 255, 255, 255]], np.uint8).repeat(3, 0).repeat(2, 1)
    ds = open_dataset(f"mapillary:{tmp_path}")
    assert ds.table.name == "mapillary v2.0 (minimal)" and ds.names == ["x1", "x2"]
    np.testing.assert_array_equal(ds.read_label(0), minimal)
    liberal = minimal.copy()
    liberal[3:, 6:] = 0                                                # bike lane -> road
    np.testing.assert_array_equal(open_dataset(f"mapillary:{tmp_path}?mapping=liberal").read_label(1), liberal)
    assert raw.max() < 124 and notes == []

    # With v1.2 labels beside (as in the v2.0 release), v1.2 is read unless v2.0 is asked for.
    _mapillary_config(tmp_path / "config_v1.2.json", MAPILLARY_V12_CLASSES)
    for name in ("x1", "x2"):
        fx.save(MAPILLARY_RAW, tmp_path / "training" / "v1.2" / "labels" / f"{name}.png", mode="P")
    assert open_dataset(f"mapillary:{tmp_path}").table is MAPILLARY_TABLES["minimal"]
    np.testing.assert_array_equal(open_dataset(f"mapillary:{tmp_path}?version=v2.0").read_label(0), minimal)
    with pytest.raises(S2RError, match=r"v1.1 labels.*not found") as err:
        open_dataset(f"mapillary:{tmp_path}?version=v1.1")
    assert "training/v1.2/labels/, training/v2.0/labels/" in err.value.hint


def test_mapillary_v20_needs_its_config_and_missing_labels_say_where_they_were_searched(tmp_path, notes):
    _mapillary_v20(tmp_path, MAPILLARY_V20_CLASSES)
    (tmp_path / "config_v2.0.json").unlink()
    with pytest.raises(S2RError, match="config_v2.0.json"):
        open_dataset(f"mapillary:{tmp_path}")
    _mapillary_config(tmp_path / "config_v2.0.json", MAPILLARY_V12_CLASSES)     # a v1.2 list under the v2.0 name
    with pytest.raises(S2RError, match=r"lists 66 classes and lacks .* human--person--individual") as err:
        open_dataset(f"mapillary:{tmp_path}")
    assert "v1.1/v1.2" in err.value.hint and "v2.0" in err.value.hint
    fx.save(fx.rgb(3), tmp_path / "validation" / "images" / "v.jpg")
    ds = open_dataset(f"mapillary:{tmp_path}?split=validation")
    assert not ds.has_labels
    assert any("validation/v1.2/labels/, validation/labels/, validation/v2.0/labels/" in n for n in notes)


def test_mapillary_v20_table_is_data_that_agrees_with_v12():
    assert len(MAPILLARY_V20_CLASSES) == 124 == len(set(MAPILLARY_V20_CLASSES))
    for mapping in MAPILLARY_V20_MAPPINGS.values():
        assert set(mapping) <= set(MAPILLARY_V20_CLASSES) and set(mapping.values()) <= set(CS19.class_names)
    table = mapillary_v20_table(MAPILLARY_V20_CLASSES)
    ids = {n: k for k, n in enumerate(MAPILLARY_V20_CLASSES)}
    for name, cls in [("construction--flat--road", "road"), ("construction--flat--sidewalk", "sidewalk"),
                      ("human--person--individual", "person"), ("object--vehicle--on-rails", "train"),
                      ("object--traffic-light--pedestrians", "traffic light"), ("marking--discrete--stop-line", "road"),
                      ("object--traffic-sign--front", "traffic sign")]:
        assert table.mapping[ids[name]] == CS19.index(cls), name
    for name in ("object--traffic-sign--back", "object--support--pole-group", "void--ego-vehicle", "nature--snow"):
        assert ids[name] not in table.mapping
    assert table.known_values() == tuple(range(124))
    # Classes with the same name in v1.2 and v2.0 map alike, in both variants.
    for variant, v12 in MAPILLARY_TABLES.items():
        v20 = MAPILLARY_V20_MAPPINGS[variant]
        for k, name in enumerate(MAPILLARY_V12_CLASSES):
            if name in ids:
                expected = v12.mapping.get(k, IGNORE)
                assert (CS19.index(v20[name]) if name in v20 else IGNORE) == expected, (variant, name)


# --------------------------------------------------------------------------------------------------
# prepare remap: all-ignore and all-skipped runs fail; retries need no --overwrite

RAW = fx.blocks([[7, 21, 23, 26], [1, 17, 20, 32]])


def test_remap_fails_loudly_when_every_label_is_ignore(tmp_path):
    root = tmp_path / "gta"
    fx.gta5(root, np.full_like(RAW, 200))                    # no value in the table: all ignore with skip
    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "prepare", "remap", f"gta5:{root}", "--out", str(out),
                                 "--on-error", "skip", "--workers", "1"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "every label" in lines[0] and "ignore (255)" in lines[0] and "200 (" in lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and len(manifest["all_ignore"]) == 3
    # Fixed data, same command, no --overwrite: the failed output is redone, not kept.
    fx.gta5(root, RAW)
    manifest = remap_dataset(f"gta5:{root}", out, on_error="skip", workers=1)
    assert manifest["status"] == "complete" and manifest["counts"]["written"] == 3 and manifest["all_ignore"] == []


def test_remap_fails_when_every_sample_is_skipped(tmp_path):
    root = tmp_path / "gta"
    fx.gta5(root, RAW)
    for image in (root / "images").iterdir():
        image.write_bytes(image.read_bytes()[:30])          # every image truncated
    with pytest.raises(S2RError, match="every one of the 3 samples .* was left out"):
        remap_dataset(f"gta5:{root}?mismatch=resize", tmp_path / "out", on_error="skip", workers=1)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "failed"


def test_remap_retry_after_a_failed_run_needs_no_overwrite(tmp_path):
    root = tmp_path / "gta"
    fx.gta5(root, RAW)
    bad = RAW.copy()
    bad[0, 0] = 200
    fx.save(bad, root / "labels" / "00004.png", mode="P")
    out = tmp_path / "out"
    with pytest.raises(S2RError, match="200"):
        remap_dataset(f"gta5:{root}", out, workers=1)         # stops at 00004: an unfinished output
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    manifest = remap_dataset(f"gta5:{root}?limit=2", out, workers=1)   # another spec, same --out
    assert manifest["status"] == "complete" and manifest["spec"].endswith("?limit=2")
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["00001.png", "00003.png"]
    with pytest.raises(S2RError, match="holds a different output"):   # a finished one is still protected
        remap_dataset(f"gta5:{root}", out, workers=1, on_error="skip")


def test_remap_resumes_an_output_with_no_manifest(tmp_path):
    root = tmp_path / "gta"
    fx.gta5(root, RAW)
    out = tmp_path / "out"
    remap_dataset(f"gta5:{root}", out, workers=1)
    (out / "manifest.json").unlink()                           # stopped before the manifest was written
    (out / "labels" / "00003.png").unlink()
    manifest = remap_dataset(f"gta5:{root}", out, workers=1)
    assert manifest["counts"]["kept"] == 2 and manifest["counts"]["written"] == 1
    (out / "manifest.json").unlink()
    fx.save(RAW, out / "labels" / "someone_elses.png")          # not a file this remap would write
    with pytest.raises(S2RError, match="holds no remap manifest"):
        remap_dataset(f"gta5:{root}", out, workers=1)
