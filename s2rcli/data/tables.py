"""Raw label tables of the supported datasets, kept as plain data.

Each table maps a dataset's raw label values to ``cityscapes34`` label ids (datasets that store
Cityscapes labelIds) or to ``cityscapes19`` trainIds (the others); :class:`RawTable` composes it
with the conversion into whatever label space is requested. Raw values the table does not list but
knows (``known``) map to 255; values it does not know at all are reported as unknown.

Sources: the datasets' own documentation and public loaders (docs/data.md lists each layout). Where a
mapping was derived rather than published (CARLA, Mapillary v2.0), that is said next to it.
"""

from __future__ import annotations

from functools import lru_cache

from .labels import IGNORE, RawTable, get_label_space

# --------------------------------------------------------------------------------------------------
# Cityscapes labelIds (Cityscapes gtFine *_labelIds.png, GTA5 palette indices, Synscapes img/class).
# The ids are stored as is in cityscapes34; the conversion to trainIds is cityscapesscripts' table.

CITYSCAPES_LABEL_IDS = RawTable(
    "cityscapes labelIds", "cityscapes34", {i: i for i in range(34)},
    description="Cityscapes label ids 0-33 (trainIds via cityscapesscripts)")

# --------------------------------------------------------------------------------------------------
# SYNTHIA-RAND-CITYSCAPES: class id in the first channel of a 16-bit PNG.

SYNTHIA_CLASSES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign",
    "pedestrian", "bicycle", "motorcycle", "parking-slot", "road-work", "traffic light", "terrain", "rider",
    "truck", "bus", "train", "wall", "lanemarking",
)
SYNTHIA_TO_CS19 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13,
                   18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
"""The 19-trainId mapping of the AdaptSegNet/BDL/DAFormer family; lanemarking (22) stays ignore.
Terrain (16), truck (18) and train (20) have no pixels in SYNTHIA."""

SYNTHIA = RawTable("synthia", "cityscapes19", SYNTHIA_TO_CS19, known=tuple(range(len(SYNTHIA_CLASSES))),
                   description="SYNTHIA-RAND-CITYSCAPES class ids 0-22")

# --------------------------------------------------------------------------------------------------
# Mapillary Vistas v1.2: palette PNGs, index = class id 0..65 (config_v1.2.json order).

MAPILLARY_V12_CLASSES = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb", "construction--barrier--fence",
    "construction--barrier--guard-rail", "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
    "construction--flat--parking", "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
    "construction--structure--bridge", "construction--structure--building", "construction--structure--tunnel",
    "human--person", "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand", "nature--sky",
    "nature--snow", "nature--terrain", "nature--vegetation", "nature--water", "object--banner", "object--bench",
    "object--bike-rack", "object--billboard", "object--catch-basin", "object--cctv-camera", "object--fire-hydrant",
    "object--junction-box", "object--mailbox", "object--manhole", "object--phone-booth", "object--pothole",
    "object--street-light", "object--support--pole", "object--support--traffic-sign-frame",
    "object--support--utility-pole", "object--traffic-light", "object--traffic-sign--back",
    "object--traffic-sign--front", "object--trash-can", "object--vehicle--bicycle", "object--vehicle--boat",
    "object--vehicle--bus", "object--vehicle--car", "object--vehicle--caravan", "object--vehicle--motorcycle",
    "object--vehicle--on-rails", "object--vehicle--other-vehicle", "object--vehicle--trailer",
    "object--vehicle--truck", "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle",
    "void--unlabeled",
)
MAPILLARY_MINIMAL_TO_CS19 = {13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7,
                             30: 8, 29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16,
                             57: 17, 52: 18}
"""The minimal mapping (as in tue-mps/benchmark-vfm-ss); everything else is ignore."""
MAPILLARY_LIBERAL_EXTRA = {7: 0, 8: 0, 14: 0, 23: 0, 43: 0,   # bike lane, crosswalk, service lane, zebra, pothole
                           9: 1, 11: 1,                        # curb cut, pedestrian area
                           44: 5, 46: 5,                       # street light, traffic-sign frame
                           25: 9, 26: 9}                       # mountain, sand
"""What the liberal variant adds (as unipercept's CLASSES_AS_CITYSCAPES)."""

MAPILLARY_TABLES = {
    "minimal": RawTable("mapillary v1.2 (minimal)", "cityscapes19", MAPILLARY_MINIMAL_TO_CS19,
                        known=tuple(range(66)), description="Mapillary Vistas v1.2 ids 0-65, minimal mapping"),
    "liberal": RawTable("mapillary v1.2 (liberal)", "cityscapes19",
                        {**MAPILLARY_MINIMAL_TO_CS19, **MAPILLARY_LIBERAL_EXTRA}, known=tuple(range(66)),
                        description="Mapillary Vistas v1.2 ids 0-65, liberal mapping"),
}

MAPILLARY_V12_CONFIGS = ("config_v1.2.json", "config.json")
"""Where the 66 class names are listed: v1.2 ships config_v1.2.json, v1.1 (labels directly under the
split) ships config.json with the same 66 classes in the same order."""

# Mapillary Vistas v2.0: palette PNGs under <split>/v2.0/labels, index = class id in config_v2.0.json's
# order (124 classes). The mapping to cityscapes19 is kept by class *name* (derived here, following the
# v1.2 mappings above class by class; v2.0 splits several v1.2 classes, e.g. traffic lights by kind and
# lane markings by shape), so ids always come from the dataset's own config_v2.0.json.

MAPILLARY_V20_CLASSES = (
    "animal--bird", "animal--ground-animal", "construction--barrier--ambiguous",
    "construction--barrier--concrete-block", "construction--barrier--curb", "construction--barrier--fence",
    "construction--barrier--guard-rail", "construction--barrier--other-barrier", "construction--barrier--road-median",
    "construction--barrier--road-side", "construction--barrier--separator", "construction--barrier--temporary",
    "construction--barrier--wall", "construction--flat--bike-lane", "construction--flat--crosswalk-plain",
    "construction--flat--curb-cut", "construction--flat--driveway", "construction--flat--parking",
    "construction--flat--parking-aisle", "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--road-shoulder", "construction--flat--service-lane",
    "construction--flat--sidewalk", "construction--flat--traffic-island", "construction--structure--bridge",
    "construction--structure--building", "construction--structure--garage", "construction--structure--tunnel",
    "human--person--individual", "human--person--person-group", "human--rider--bicyclist",
    "human--rider--motorcyclist", "human--rider--other-rider", "marking--continuous--dashed",
    "marking--continuous--solid", "marking--continuous--zigzag", "marking--discrete--ambiguous",
    "marking--discrete--arrow--left", "marking--discrete--arrow--other", "marking--discrete--arrow--right",
    "marking--discrete--arrow--split-left-or-straight", "marking--discrete--arrow--split-right-or-straight",
    "marking--discrete--arrow--straight", "marking--discrete--crosswalk-zebra", "marking--discrete--give-way-row",
    "marking--discrete--give-way-single", "marking--discrete--hatched--chevron", "marking--discrete--hatched--diagonal",
    "marking--discrete--other-marking", "marking--discrete--stop-line", "marking--discrete--symbol--bicycle",
    "marking--discrete--symbol--other", "marking--discrete--text", "marking-only--continuous--dashed",
    "marking-only--discrete--crosswalk-zebra", "marking-only--discrete--other-marking", "marking-only--discrete--text",
    "nature--mountain", "nature--sand", "nature--sky", "nature--snow", "nature--terrain", "nature--vegetation",
    "nature--water", "object--banner", "object--bench", "object--bike-rack", "object--catch-basin",
    "object--cctv-camera", "object--fire-hydrant", "object--junction-box", "object--mailbox", "object--manhole",
    "object--parking-meter", "object--phone-booth", "object--pothole", "object--sign--advertisement",
    "object--sign--ambiguous", "object--sign--back", "object--sign--information", "object--sign--other",
    "object--sign--store", "object--street-light", "object--support--pole", "object--support--pole-group",
    "object--support--traffic-sign-frame", "object--support--utility-pole", "object--traffic-cone",
    "object--traffic-light--cyclists", "object--traffic-light--general-horizontal",
    "object--traffic-light--general-single", "object--traffic-light--general-upright",
    "object--traffic-light--other", "object--traffic-light--pedestrians", "object--traffic-sign--ambiguous",
    "object--traffic-sign--back", "object--traffic-sign--direction-back", "object--traffic-sign--direction-front",
    "object--traffic-sign--front", "object--traffic-sign--information-parking",
    "object--traffic-sign--temporary-back", "object--traffic-sign--temporary-front", "object--trash-can",
    "object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",
    "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
    "object--vehicle--vehicle-group", "object--vehicle--wheeled-slow", "object--water-valve", "void--car-mount",
    "void--dynamic", "void--ego-vehicle", "void--ground", "void--static", "void--unlabeled",
)
"""The 124 v2.0 class names, in config_v2.0.json's order (for tests and messages; ids are always read
from the dataset's own config_v2.0.json)."""

_V20_MARKINGS = ("marking--continuous--dashed", "marking--continuous--solid", "marking--continuous--zigzag",
                 "marking--discrete--ambiguous", "marking--discrete--arrow--left", "marking--discrete--arrow--other",
                 "marking--discrete--arrow--right", "marking--discrete--arrow--split-left-or-straight",
                 "marking--discrete--arrow--split-right-or-straight", "marking--discrete--arrow--straight",
                 "marking--discrete--give-way-row", "marking--discrete--give-way-single",
                 "marking--discrete--hatched--chevron", "marking--discrete--hatched--diagonal",
                 "marking--discrete--other-marking", "marking--discrete--stop-line",
                 "marking--discrete--symbol--bicycle", "marking--discrete--symbol--other", "marking--discrete--text")
MAPILLARY_V20_MINIMAL_TO_CS19 = {
    "construction--flat--road": "road", **{name: "road" for name in _V20_MARKINGS}, "object--manhole": "road",
    "construction--barrier--curb": "sidewalk", "construction--flat--sidewalk": "sidewalk",
    "construction--structure--building": "building",
    "construction--barrier--wall": "wall",
    "construction--barrier--fence": "fence",
    "object--support--pole": "pole", "object--support--utility-pole": "pole",
    **{f"object--traffic-light--{kind}": "traffic light"
       for kind in ("cyclists", "general-horizontal", "general-single", "general-upright", "other", "pedestrians")},
    **{f"object--traffic-sign--{kind}": "traffic sign"
       for kind in ("front", "direction-front", "temporary-front", "information-parking")},
    "nature--vegetation": "vegetation",
    "nature--terrain": "terrain",
    "nature--sky": "sky",
    "human--person--individual": "person", "human--person--person-group": "person",
    "human--rider--bicyclist": "rider", "human--rider--motorcyclist": "rider", "human--rider--other-rider": "rider",
    "object--vehicle--car": "car",
    "object--vehicle--truck": "truck",
    "object--vehicle--bus": "bus",
    "object--vehicle--on-rails": "train",
    "object--vehicle--motorcycle": "motorcycle",
    "object--vehicle--bicycle": "bicycle",
}
"""v2.0 class name -> cityscapes19 class name, the v1.2 minimal mapping carried over by name: v1.2's
``marking--general`` is split into the ``marking--continuous/discrete--*`` classes (all road, except
the zebra crossing, as in v1.2), its traffic light into six kinds, and its sign fronts into four;
person groups are person (as in Cityscapes). Everything else is ignore (255)."""
MAPILLARY_V20_LIBERAL_EXTRA = {
    "construction--flat--bike-lane": "road", "construction--flat--crosswalk-plain": "road",
    "construction--flat--service-lane": "road", "marking--discrete--crosswalk-zebra": "road", "object--pothole": "road",
    "construction--flat--curb-cut": "sidewalk", "construction--flat--pedestrian-area": "sidewalk",
    "object--street-light": "pole", "object--support--traffic-sign-frame": "pole",
    "nature--mountain": "terrain", "nature--sand": "terrain",
}
"""What the liberal variant adds: the same classes as v1.2's liberal extras, by their v2.0 names."""
MAPILLARY_V20_MAPPINGS = {"minimal": MAPILLARY_V20_MINIMAL_TO_CS19,
                          "liberal": {**MAPILLARY_V20_MINIMAL_TO_CS19, **MAPILLARY_V20_LIBERAL_EXTRA}}


@lru_cache(maxsize=None)
def mapillary_v20_table(class_names: tuple[str, ...], mapping: str = "minimal") -> RawTable:
    """The table of v2.0 label ids, given the class names in config_v2.0.json's order.

    Raises ``KeyError`` naming the classes of the mapping that ``class_names`` lacks.
    """
    by_name = MAPILLARY_V20_MAPPINGS[mapping]
    missing = sorted(set(by_name) - set(class_names))
    if missing:
        raise KeyError(missing)
    cs19 = get_label_space("cityscapes19")
    ids = {i: cs19.index(by_name[name]) for i, name in enumerate(class_names) if name in by_name}
    return RawTable(f"mapillary v2.0 ({mapping})", "cityscapes19", ids, known=tuple(range(len(class_names))),
                    description=f"Mapillary Vistas v2.0 ids 0-{len(class_names) - 1}, {mapping} mapping by class name")


# --------------------------------------------------------------------------------------------------
# CARLA semantic camera. The tag is in the red channel of the raw output; CityScapesPalette writes
# colours. The tag set changed at 0.9.14. Both mappings to cityscapes19 are derived from the tag
# lists (no canonical published mapping exists).

CARLA_0913_TAGS = (
    "Unlabeled", "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Vehicles", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack", "GuardRail",
    "TrafficLight", "Static", "Dynamic", "Water", "Terrain",
)
CARLA_0913_TO_CS19 = {7: 0, 6: 0, 8: 1, 1: 2, 11: 3, 2: 4, 5: 5, 18: 6, 12: 7, 9: 8, 22: 9, 13: 10, 4: 11, 10: 13}
"""0.9.10-0.9.13. "Vehicles" becomes car: there is no rider, truck, bus, train, motorcycle or bicycle."""
CARLA_0913_COLORS = (
    (0, 0, 0), (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153), (157, 234, 50),
    (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0), (70, 130, 180),
    (81, 0, 81), (150, 100, 100), (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160),
    (170, 120, 50), (45, 60, 150), (145, 170, 100),
)

CARLA_0914_TAGS = (
    "None", "Roads", "Sidewalks", "Buildings", "Walls", "Fences", "Poles", "TrafficLight", "TrafficSigns",
    "Vegetation", "Terrain", "Sky", "Pedestrians", "Rider", "Car", "Truck", "Bus", "Train", "Motorcycle",
    "Bicycle", "Static", "Dynamic", "Other", "Water", "RoadLines", "Ground", "Bridge", "RailTrack", "GuardRail",
)
CARLA_0914_TO_CS19 = {**{tag: tag - 1 for tag in range(1, 20)}, 24: 0}
"""0.9.14 and later: tags 1-19 follow the Cityscapes train classes (trainId = tag - 1); road lines are road."""
CARLA_0914_COLORS = (
    (0, 0, 0), (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32), (110, 190, 160),
    (170, 120, 50), (55, 90, 80), (45, 60, 150), (157, 234, 50), (81, 0, 81), (150, 100, 100), (230, 150, 140),
    (180, 165, 180),
)

CARLA_TAG_HINT = ("pass ?version=0.9.13 (tags 0-22) or ?version=0.9.14 (tags 0-28) to choose the tag set, or "
                  "?labels=palette if the labels are CityScapesPalette colours")
CARLA_COLOR_HINT = ("if the labels hold CARLA tags (a greyscale image, or the tag in the red channel) rather than "
                    "CityScapesPalette colours, pass ?labels=raw")
CARLA_TABLES = {
    "0.9.13": RawTable("carla 0.9.13 tags", "cityscapes19", CARLA_0913_TO_CS19, known=tuple(range(23)),
                       description="CARLA 0.9.10-0.9.13 semantic tags 0-22", hint=CARLA_TAG_HINT),
    "0.9.14": RawTable("carla 0.9.14 tags", "cityscapes19", CARLA_0914_TO_CS19, known=tuple(range(29)),
                       description="CARLA 0.9.14+ semantic tags 0-28", hint=CARLA_TAG_HINT),
}
CARLA_COLORS = {"0.9.13": CARLA_0913_COLORS, "0.9.14": CARLA_0914_COLORS}


@lru_cache(maxsize=None)
def carla_color_table(version: str | None) -> tuple[dict[tuple[int, int, int], int], RawTable]:
    """Colour -> code, and the table of codes, for CityScapesPalette images.

    With a version, the codes are that version's tags. Without one, the colours of both versions
    are accepted: every colour the two palettes share names the same class in both, so the
    codes are the cityscapes19 trainIds themselves (255 for colours of classes outside it).
    Colours outside the palette are decoded to ``COLOR_CODE_BASE + packed colour`` (reported as
    ``rgb(r,g,b)``, see :class:`RawTable`).
    """
    if version is not None:
        tags = CARLA_TABLES[version]
        table = RawTable(f"carla {version} CityScapesPalette colours", tags.target, tags.mapping, known=tags.known,
                         description=f"CARLA {version} CityScapesPalette colours", value_format="rgb",
                         hint=CARLA_COLOR_HINT)
        return {color: tag for tag, color in enumerate(CARLA_COLORS[version])}, table
    colors: dict[tuple[int, int, int], int] = {}
    for v, palette in CARLA_COLORS.items():
        mapping = CARLA_TABLES[v].mapping
        for tag, color in enumerate(palette):
            train_id = mapping.get(tag, IGNORE)
            if colors.setdefault(color, train_id) != train_id:
                raise AssertionError(f"CARLA colour {color} means different classes across versions")
    table = RawTable("carla CityScapesPalette colours", "cityscapes19", {i: i for i in range(19)},
                     known=tuple(range(19)) + (IGNORE,), value_format="rgb", hint=CARLA_COLOR_HINT,
                     description="CARLA CityScapesPalette colours, both versions")
    return colors, table
