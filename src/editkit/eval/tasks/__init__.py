"""One module per data format or protocol; importing this package registers them all."""
from . import (
    counterfact_easyedit,
    counterfact_rome,
    mquake,
    mquake_multihop,
    updates,
    wild,
    wild_questions,
    zsre,
)

__all__ = ["counterfact_easyedit", "counterfact_rome", "mquake", "mquake_multihop", "updates",
           "wild", "wild_questions", "zsre"]
