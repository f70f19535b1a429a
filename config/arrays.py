"""The journey map as flat numpy arrays: the only form of the map the Numba kernels see."""

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# Role bits of a touchpoint type (windows use them; scoring does not).
ROLE_IMPRESSION = 1
ROLE_CLICK = 2
ROLE_OUTBOUND = 4
ROLE_RESPONSE = 8
ROLE_CONVERSION = 16
ROLE_BITS = {
    "impression": ROLE_IMPRESSION,
    "click": ROLE_CLICK,
    "outbound": ROLE_OUTBOUND,
    "response": ROLE_RESPONSE,
}

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


class JourneyArrays(NamedTuple):
    """Everything the scoring kernel needs from the map, indexed by type, stage and channel.

    Channel index 0 is ``other`` (multiplier 1.0): unknown and missing channels land there
    so hostile input cannot grow any table.
    """

    type_weight: F64  # [n_types]
    type_factor: F64  # [n_types, n_stages] evidence factor per stage
    type_req_slot: I32  # [n_types] slot in the requires-counts, -1 when no stage requires it
    type_roles: I32  # [n_types] ROLE_* bits
    channel_mult: F64  # [n_channels + 1], index 0 = other
    stage_threshold: F64  # [n_stages], -inf for the first stage (never tested)
    stage_min_sentiment: F64  # [n_stages], NaN when the stage has no sentiment rule
    stage_requires: I64  # [n_stages, n_req_slots] minimum lifetime counts (0 = none)
    half_life_ms: float
    saturation: float
    dedup_window_ms: int
    dedup_slots: int

    @property
    def n_stages(self) -> int:
        """Number of stages of the map (``dormant`` not included)."""
        return int(self.stage_threshold.shape[0])

    @property
    def n_req_slots(self) -> int:
        """Number of touchpoint types whose lifetime count some stage requires."""
        return int(self.stage_requires.shape[1])
