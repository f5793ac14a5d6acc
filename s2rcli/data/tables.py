"""Raw label tables of the supported datasets, kept as plain data.

Each table maps a dataset's raw label values to ``cityscapes34`` label ids (datasets that store
Cityscapes labelIds) or to ``cityscapes19`` trainIds (the others); :class:`RawTable` composes it
with the conversion into whatever label space is requested. Raw values the table does not list but
knows (``known``) map to 255; values it does not know at all are reported as unknown.

Sources: DATASETS.md in the project notes (the datasets' own documentation and the public loaders it
cites). Where a mapping was derived rather than published (CARLA), that is said next to it.
"""

from __future__ import annotations

from functools import lru_cache

from .labels import IGNORE, RawTable

UNKNOWN_COLOR = 65535
"""The code a colour-coded label gets for a colour that is not in the palette (reported as unknown)."""

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

CARLA_TABLES = {
    "0.9.13": RawTable("carla 0.9.13 tags", "cityscapes19", CARLA_0913_TO_CS19, known=tuple(range(23)),
                       description="CARLA 0.9.10-0.9.13 semantic tags 0-22"),
    "0.9.14": RawTable("carla 0.9.14 tags", "cityscapes19", CARLA_0914_TO_CS19, known=tuple(range(29)),
                       description="CARLA 0.9.14+ semantic tags 0-28"),
}
CARLA_COLORS = {"0.9.13": CARLA_0913_COLORS, "0.9.14": CARLA_0914_COLORS}


@lru_cache(maxsize=None)
def carla_color_table(version: str | None) -> tuple[dict[tuple[int, int, int], int], RawTable]:
    """Colour -> code, and the table of codes, for CityScapesPalette images.

    With a version, the codes are that version's tags. Without one, the colours of both versions
    are accepted: every colour the two palettes share names the same class in both, so the
    codes are the cityscapes19 trainIds themselves (255 for colours of classes outside it).
    """
    if version is not None:
        return {color: tag for tag, color in enumerate(CARLA_COLORS[version])}, CARLA_TABLES[version]
    colors: dict[tuple[int, int, int], int] = {}
    for v, palette in CARLA_COLORS.items():
        mapping = CARLA_TABLES[v].mapping
        for tag, color in enumerate(palette):
            train_id = mapping.get(tag, IGNORE)
            if colors.setdefault(color, train_id) != train_id:
                raise AssertionError(f"CARLA colour {color} means different classes across versions")
    table = RawTable("carla CityScapesPalette colours", "cityscapes19", {i: i for i in range(19)},
                     known=tuple(range(19)) + (IGNORE,),
                     description=f"CARLA CityScapesPalette colours, both versions; {UNKNOWN_COLOR} = not a palette colour")
    return colors, table
