"""One module per data format; importing this package registers them all."""
from . import counterfact_easyedit, counterfact_rome, mquake, wild, zsre

__all__ = ["counterfact_easyedit", "counterfact_rome", "mquake", "wild", "zsre"]
