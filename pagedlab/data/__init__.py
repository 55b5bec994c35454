"""Files pagedlab ships: ``tiny_copy.pt``, the tiny model's weights (see :mod:`pagedlab.tiny`)."""
