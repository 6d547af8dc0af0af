"""VBench constants used by :mod:`t2vturbo.eval.vbench` and :mod:`t2vturbo.eval.score_table`.

Copied (numbers and prompt text only) from the public VBench repository
(https://github.com/Vchitect/VBench), so that the project never needs VBench, or the
shared data folder, at run time:

* :data:`DIM_WEIGHT`, :data:`NORMALIZE`, :data:`QUALITY_DIMS`, :data:`SEMANTIC_DIMS`,
  :data:`QUALITY_WEIGHT`, :data:`SEMANTIC_WEIGHT`: ``scripts/constant.py``
  (``DIM_WEIGHT``, ``NORMALIZE_DIC``, ``QUALITY_LIST``, ``SEMANTIC_LIST``,
  ``QUALITY_WEIGHT``, ``SEMANTIC_WEIGHT``), as used by ``scripts/cal_final_score.py``.
* :data:`TEMPORAL_FLICKERING_PROMPTS`: ``prompts/prompts_per_dimension/temporal_flickering.txt``
  (also the first 75 lines of ``prompts/all_dimension.txt``); ``prompts/README.md`` asks for 25
  samples per prompt for this dimension (``static_filter.py`` then keeps up to 5 static ones).
* Dynamic-degree rule (:data:`DYNAMIC_TOP_FRACTION`, :data:`DYNAMIC_THRESHOLD_AT_256`,
  :data:`DYNAMIC_COUNT_PER_16_FRAMES`): ``vbench/dynamic_degree.py`` (``get_score``,
  ``set_params``, ``check_move``).
* :data:`REFERENCE_ROWS`: published VBench Quality / Semantic / Total scores (percent) from the
  T2V-Turbo-v2 paper (Li et al., 2024, Table 1).

The same numbers are mirrored in ``shared/data/vbench/score_constants.json`` (tests compare the
two when that folder is present).
"""

from __future__ import annotations

__all__ = [
    "ALL_DIMS",
    "DIM_WEIGHT",
    "DYNAMIC_COUNT_PER_16_FRAMES",
    "DYNAMIC_THRESHOLD_AT_256",
    "DYNAMIC_TOP_FRACTION",
    "FLICKER_SAMPLES_PER_PROMPT",
    "NORMALIZE",
    "QUALITY_DIMS",
    "QUALITY_WEIGHT",
    "REFERENCE_ROWS",
    "SAMPLES_PER_PROMPT",
    "SEMANTIC_DIMS",
    "SEMANTIC_WEIGHT",
    "TEMPORAL_FLICKERING_PROMPTS",
    "VBENCH_FPS",
    "dim_key",
]

#: Videos per prompt for every VBench dimension except temporal flickering.
SAMPLES_PER_PROMPT: int = 5
#: Videos per prompt for the temporal-flickering prompts (VBench's static filter keeps <= 5).
FLICKER_SAMPLES_PER_PROMPT: int = 25
#: Frame rate of VBench's reference sampling code (``torchvision.io.write_video(..., fps=8)``).
VBENCH_FPS: int = 8

#: Quality ("video quality") dimensions, in VBench's order.
QUALITY_DIMS: tuple[str, ...] = (
    "subject consistency",
    "background consistency",
    "temporal flickering",
    "motion smoothness",
    "aesthetic quality",
    "imaging quality",
    "dynamic degree",
)
#: Semantic ("video-condition consistency") dimensions, in VBench's order.
SEMANTIC_DIMS: tuple[str, ...] = (
    "object class",
    "multiple objects",
    "human action",
    "color",
    "spatial relationship",
    "scene",
    "appearance style",
    "temporal style",
    "overall consistency",
)
ALL_DIMS: tuple[str, ...] = QUALITY_DIMS + SEMANTIC_DIMS

#: Per-dimension weight inside its group (dynamic degree counts half).
DIM_WEIGHT: dict[str, float] = {d: 1.0 for d in ALL_DIMS}
DIM_WEIGHT["dynamic degree"] = 0.5

#: Per-dimension (min, max) of the raw score used to normalise it to [0, 1] (VBench ``NORMALIZE_DIC``).
NORMALIZE: dict[str, tuple[float, float]] = {
    "subject consistency": (0.1462, 1.0),
    "background consistency": (0.2615, 1.0),
    "temporal flickering": (0.6293, 1.0),
    "motion smoothness": (0.706, 0.9975),
    "dynamic degree": (0.0, 1.0),
    "aesthetic quality": (0.0, 1.0),
    "imaging quality": (0.0, 1.0),
    "object class": (0.0, 1.0),
    "multiple objects": (0.0, 1.0),
    "human action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance style": (0.0009, 0.2855),
    "temporal style": (0.0, 0.364),
    "overall consistency": (0.0, 0.364),
}

#: Total = (QUALITY_WEIGHT * Quality + SEMANTIC_WEIGHT * Semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT).
QUALITY_WEIGHT: float = 4.0
SEMANTIC_WEIGHT: float = 1.0

#: Published VBench scores in percent (T2V-Turbo-v2 paper, Table 1).
REFERENCE_ROWS: dict[str, dict[str, float]] = {
    "T2V-Turbo-v2 (with MG, 16 steps)": {"quality": 85.13, "semantic": 77.12, "total": 83.52},
    "T2V-Turbo-v2 (without MG)": {"quality": 84.08, "semantic": 78.33, "total": 82.93},
    "VideoCrafter2": {"quality": 82.2, "semantic": 73.42, "total": 80.44},
    "T2V-Turbo (4-step)": {"quality": 82.57, "semantic": 74.76, "total": 81.01},
}

# Dynamic degree (vbench/dynamic_degree.py): per consecutive frame pair, the mean magnitude of the
# largest 5 % of RAFT flow vectors; a video is "dynamic" when at least round(4 * F / 16) pairs exceed
# 6.0 * min(H, W) / 256 pixels.
DYNAMIC_TOP_FRACTION: float = 0.05
DYNAMIC_THRESHOLD_AT_256: float = 6.0
DYNAMIC_COUNT_PER_16_FRAMES: float = 4.0

#: VBench's temporal-flickering prompts (prompts/prompts_per_dimension/temporal_flickering.txt, 75 prompts).
TEMPORAL_FLICKERING_PROMPTS: tuple[str, ...] = (
    "In a still frame, a stop sign",
    "a toilet, frozen in time",
    "a laptop, frozen in time",
    "A tranquil tableau of alley",
    "A tranquil tableau of bar",
    "A tranquil tableau of barn",
    "A tranquil tableau of bathroom",
    "A tranquil tableau of bedroom",
    "A tranquil tableau of cliff",
    "In a still frame, courtyard",
    "In a still frame, gas station",
    "A tranquil tableau of house",
    "indoor gymnasium, frozen in time",
    "A tranquil tableau of indoor library",
    "A tranquil tableau of kitchen",
    "A tranquil tableau of palace",
    "In a still frame, parking lot",
    "In a still frame, phone booth",
    "A tranquil tableau of restaurant",
    "A tranquil tableau of tower",
    "A tranquil tableau of a bowl",
    "A tranquil tableau of an apple",
    "A tranquil tableau of a bench",
    "A tranquil tableau of a bed",
    "A tranquil tableau of a chair",
    "A tranquil tableau of a cup",
    "A tranquil tableau of a dining table",
    "In a still frame, a pear",
    "A tranquil tableau of a bunch of grapes",
    "A tranquil tableau of a bowl on the kitchen counter",
    "A tranquil tableau of a beautiful, handcrafted ceramic bowl",
    "A tranquil tableau of an antique bowl",
    "A tranquil tableau of an exquisite mahogany dining table",
    "A tranquil tableau of a wooden bench in the park",
    "A tranquil tableau of a beautiful wrought-iron bench surrounded by blooming flowers",
    "In a still frame, a park bench with a view of the lake",
    "A tranquil tableau of a vintage rocking chair was placed on the porch",
    "A tranquil tableau of the jail cell was small and dimly lit, with cold, steel bars",
    "A tranquil tableau of the phone booth was tucked away in a quiet alley",
    "a dilapidated phone booth stood as a relic of a bygone era on the sidewalk, frozen in time",
    "A tranquil tableau of the old red barn stood weathered and iconic against the backdrop of the countryside",
    "A tranquil tableau of a picturesque barn was painted a warm shade of red and nestled in a picturesque meadow",
    "In a still frame, within the desolate desert, an oasis unfolded, characterized by the stoic presence of palm trees and a motionless, glassy pool of water",
    "In a still frame, the Parthenon's majestic Doric columns stand in serene solitude atop the Acropolis, framed by the tranquil Athenian landscape",
    "In a still frame, the Temple of Hephaestus, with its timeless Doric grace, stands stoically against the backdrop of a quiet Athens",
    "In a still frame, the ornate Victorian streetlamp stands solemnly, adorned with intricate ironwork and stained glass panels",
    "A tranquil tableau of the Stonehenge presented itself as an enigmatic puzzle, each colossal stone meticulously placed against the backdrop of tranquility",
    "In a still frame, in the vast desert, an oasis nestled among dunes, featuring tall palm trees and an air of serenity",
    "static view on a desert scene with an oasis, palm trees, and a clear, calm pool of water",
    "A tranquil tableau of an ornate Victorian streetlamp standing on a cobblestone street corner, illuminating the empty night",
    "A tranquil tableau of a tranquil lakeside cabin nestled among tall pines, its reflection mirrored perfectly in the calm water",
    "In a still frame, a vintage gas lantern, adorned with intricate details, gracing a historic cobblestone square",
    "In a still frame, a tranquil Japanese tea ceremony room, with tatami mats, a delicate tea set, and a bonsai tree in the corner",
    "A tranquil tableau of the Parthenon stands resolute in its classical elegance, a timeless symbol of Athens' cultural legacy",
    "A tranquil tableau of in the heart of Plaka, the neoclassical architecture of the old city harmonizes with the ancient ruins",
    "A tranquil tableau of in the desolate beauty of the American Southwest, Chaco Canyon's ancient ruins whispered tales of an enigmatic civilization that once thrived amidst the arid landscapes",
    "A tranquil tableau of at the edge of the Arabian Desert, the ancient city of Petra beckoned with its enigmatic rock-carved façades",
    "In a still frame, amidst the cobblestone streets, an Art Nouveau lamppost stood tall",
    "A tranquil tableau of in the quaint village square, a traditional wrought-iron streetlamp featured delicate filigree patterns and amber-hued glass panels",
    "A tranquil tableau of the lampposts were adorned with Art Deco motifs, their geometric shapes and frosted glass creating a sense of vintage glamour",
    "In a still frame, in the picturesque square, a Gothic-style lamppost adorned with intricate stone carvings added a touch of medieval charm to the setting",
    "In a still frame, in the heart of the old city, a row of ornate lantern-style streetlamps bathed the narrow alleyway in a warm, welcoming light",
    "A tranquil tableau of in the heart of the Utah desert, a massive sandstone arch spanned the horizon",
    "A tranquil tableau of in the Arizona desert, a massive stone bridge arched across a rugged canyon",
    "A tranquil tableau of in the corner of the minimalist tea room, a bonsai tree added a touch of nature's beauty to the otherwise simple and elegant space",
    "In a still frame, amidst the hushed ambiance of the traditional tea room, a meticulously arranged tea set awaited, with porcelain cups, a bamboo whisk",
    "In a still frame, nestled in the Zen garden, a rustic teahouse featured tatami seating and a traditional charcoal brazier",
    "A tranquil tableau of a country estate's library featured elegant wooden shelves",
    "A tranquil tableau of beneath the shade of a solitary oak tree, an old wooden park bench sat patiently",
    "A tranquil tableau of beside a tranquil pond, a weeping willow tree draped its branches gracefully over the water's surface, creating a serene tableau of reflection and calm",
    "A tranquil tableau of in the Zen garden, a perfectly raked gravel path led to a serene rock garden",
    "In a still frame, a tranquil pond was fringed by weeping cherry trees, their blossoms drifting lazily onto the glassy surface",
    "In a still frame, within the historic library's reading room, rows of antique leather chairs and mahogany tables offered a serene haven for literary contemplation",
    "A tranquil tableau of a peaceful orchid garden showcased a variety of delicate blooms",
    "A tranquil tableau of in the serene courtyard, a centuries-old stone well stood as a symbol of a bygone era, its mossy stones bearing witness to the passage of time",
)


def dim_key(name: str) -> str:
    """Canonical dimension name: ``"dynamic_degree"`` / ``"Dynamic Degree"`` -> ``"dynamic degree"``."""
    return " ".join(str(name).replace("_", " ").strip().lower().split())
