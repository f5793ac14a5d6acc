"""Label spaces and raw tables: the Cityscapes table comes from cityscapesscripts, the rest is data."""

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, trainId2label

from s2rcli.data.labels import (IGNORE, SYNTHIA13_TRAIN_IDS, SYNTHIA16_TRAIN_IDS, UNKNOWN, RawTable, colorize,
                                conversion_lut, get_label_space, identity_table, list_label_spaces, overlay)
from s2rcli.errors import S2RError


def test_cityscapes19_matches_cityscapesscripts():
    space = get_label_space("cityscapes19")
    assert space.num_classes == 19 and space.ignore_index == 255
    for train_id in range(19):
        assert space.class_names[train_id] == trainId2label[train_id].name
        assert space.colors[train_id] == tuple(trainId2label[train_id].color)
    assert space.class_names[0] == "road" and space.class_names[13] == "car" and space.class_names[18] == "bicycle"
    assert space.index("sky") == 10


def test_cityscapes34_and_synthia_subsets():
    cs34 = get_label_space("cityscapes34")
    assert cs34.num_classes == 34 and cs34.class_names[26] == "car" and cs34.class_names[7] == "road"
    assert cs34.train_ids[26] == 13 and cs34.train_ids[0] == IGNORE
    s16, s13 = get_label_space("synthia16"), get_label_space("synthia13")
    assert s16.num_classes == 16 and s13.num_classes == 13
    assert "terrain" not in s16.class_names and "truck" not in s16.class_names and "train" not in s16.class_names
    assert {"wall", "fence", "pole"} <= set(s16.class_names) and not {"wall", "fence", "pole"} & set(s13.class_names)
    assert s16.train_ids == SYNTHIA16_TRAIN_IDS and s13.train_ids == SYNTHIA13_TRAIN_IDS
    assert s16.class_names[9] == "sky" and s13.class_names[3] == "traffic light"
    assert set(list_label_spaces()) == {"cityscapes19", "cityscapes34", "synthia16", "synthia13"}


def test_unknown_space_lists_the_valid_ones():
    with pytest.raises(S2RError, match="cityscapes19"):
        get_label_space("ade20k")
    with pytest.raises(S2RError, match="no class"):
        get_label_space("cityscapes19").index("dragon")


def test_conversions():
    cs34_to_19 = conversion_lut("cityscapes34", "cityscapes19")
    for label_id in range(34):
        expected = id2label[label_id].trainId
        assert cs34_to_19[label_id] == (expected if 0 <= expected < 255 else 255)
    to34 = conversion_lut("cityscapes19", "cityscapes34")
    assert to34[0] == 7 and to34[13] == 26 and to34[18] == 33 and to34[255] == 255
    to16 = conversion_lut("cityscapes19", "synthia16")
    assert to16[9] == 255 and to16[14] == 255 and to16[16] == 255 and to16[10] == 9 and to16[18] == 15
    to13 = conversion_lut("cityscapes19", "synthia13")
    assert to13[3] == 255 and to13[5] == 255 and to13[6] == 3
    assert list(conversion_lut("cityscapes34", "cityscapes34")[:34]) == list(range(34))


def test_raw_table_composes_with_the_space():
    table = RawTable("toy", "cityscapes34", {7: 7, 26: 26, 3: 24}, known=tuple(range(30)))
    lut19 = table.lut("cityscapes19")
    assert lut19[7] == 0 and lut19[26] == 13 and lut19[3] == 11
    assert lut19[5] == IGNORE            # known, not mapped
    assert lut19[31] == UNKNOWN          # outside the table
    lut34 = table.lut("cityscapes34")
    assert lut34[26] == 26 and lut34[3] == 24
    ident = identity_table("cityscapes19").lut("cityscapes19")
    assert ident[18] == 18 and ident[255] == IGNORE and ident[19] == UNKNOWN and ident[200] == UNKNOWN


def test_colorize_and_overlay():
    label = np.array([[0, 13], [255, 10]], np.uint8)
    rgb = colorize(label)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    image = np.full((2, 2, 3), 100, np.uint8)
    mixed = overlay(image, label, alpha=0.5)
    assert tuple(mixed[1, 0]) == (100, 100, 100) and tuple(mixed[0, 0]) == (114, 82, 114)


def test_dataset_tables_known_entries():
    from s2rcli.data import tables as t

    gta = t.CITYSCAPES_LABEL_IDS.lut("cityscapes19")  # GTA5, Synscapes and Cityscapes share it
    assert (gta[7], gta[8], gta[26], gta[33], gta[0], gta[34]) == (0, 1, 13, 18, 255, UNKNOWN)

    assert len(t.SYNTHIA_CLASSES) == 23 and t.SYNTHIA_CLASSES[21] == "wall" and t.SYNTHIA_CLASSES[8] == "car"
    synthia = t.SYNTHIA.lut("cityscapes19")
    assert (synthia[3], synthia[21], synthia[1], synthia[8], synthia[11], synthia[22], synthia[23]) == (
        0, 3, 10, 13, 18, 255, UNKNOWN)
    s16 = t.SYNTHIA.lut("synthia16")
    assert (s16[1], s16[12], s16[11]) == (9, 14, 15)  # sky, motorcycle, bicycle in the compact 16-class space

    assert len(t.MAPILLARY_V12_CLASSES) == 66 and t.MAPILLARY_V12_CLASSES[55] == "object--vehicle--car"
    assert t.MAPILLARY_V12_CLASSES[65] == "void--unlabeled" and t.MAPILLARY_V12_CLASSES[27] == "nature--sky"
    minimal, liberal = (t.MAPILLARY_TABLES[k].lut("cityscapes19") for k in ("minimal", "liberal"))
    assert (minimal[13], minimal[24], minimal[17], minimal[55], minimal[52], minimal[7], minimal[66]) == (
        0, 0, 2, 13, 18, 255, UNKNOWN)
    assert (liberal[7], liberal[9], liberal[44], liberal[26], liberal[63]) == (0, 1, 5, 9, 255)

    old, new = (t.CARLA_TABLES[v].lut("cityscapes19") for v in ("0.9.13", "0.9.14"))
    assert (old[7], old[6], old[1], old[10], old[22], old[3], old[23]) == (0, 0, 2, 13, 9, 255, UNKNOWN)
    assert (new[1], new[11], new[14], new[19], new[24], new[20], new[29]) == (0, 10, 13, 18, 0, 255, UNKNOWN)
    assert t.CARLA_0913_TAGS[13] == "Sky" and t.CARLA_0914_TAGS[11] == "Sky" and len(t.CARLA_0914_COLORS) == 29
    assert t.CARLA_0913_COLORS[2] == (100, 40, 40) and t.CARLA_0914_COLORS[24] == (157, 234, 50)
    colours, table = t.carla_color_table(None)
    assert colours[(152, 251, 152)] == 9 and colours[(145, 170, 100)] == 9 and colours[(81, 0, 81)] == 255
