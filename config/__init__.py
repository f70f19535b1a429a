"""The journey map and run settings: data files plus the one validated model."""

from config.arrays import JourneyArrays
from config.model import (
    DEFAULT_PATH,
    DORMANT,
    OTHER_CHANNEL,
    JourneyMap,
    KafkaSettings,
    Settings,
    Stage,
    Topics,
    Touchpoint,
    load_settings,
    parse_settings,
)

__all__ = [
    "DEFAULT_PATH",
    "DORMANT",
    "OTHER_CHANNEL",
    "JourneyArrays",
    "JourneyMap",
    "KafkaSettings",
    "Settings",
    "Stage",
    "Topics",
    "Touchpoint",
    "load_settings",
    "parse_settings",
]
