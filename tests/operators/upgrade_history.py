"""The events of the format 1 snapshot fixture (``test_upgrade``): its first ``SAVED`` were saved."""

import random

from config.model import DEFAULT_PATH, load_settings
from tests.operators.test_scoring import BASE

SAVED = 300


def history() -> list[dict]:
    """Forty customers with several events a day over three days, and some seen once."""
    rng = random.Random(11)
    types = list(load_settings(DEFAULT_PATH).journey.touchpoints)
    return [{"customer_id": f"once-{i}" if i % 10 == 0 else f"c{rng.randrange(40)}", "event_id": f"e{i}",
             "ts": BASE + i * 420_000, "type": rng.choice(types), "channel": rng.choice(["web", "ads", None]),
             "sentiment": rng.choice([None, 0.5, -0.25])} for i in range(2 * SAVED)]
