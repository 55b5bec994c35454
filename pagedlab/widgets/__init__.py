"""Widgets for the lessons, one idea each, built from core ipywidgets and matplotlib only.

They work with ipywidgets 7.7 (Colab) and 8.x, update in place (an HTML value or a PNG image is
replaced, never a whole output), and drive only pagedlab's public API. Importing ``pagedlab``
does not import this package; importing this package loads each widget's module on first use.

    from pagedlab.widgets import GarageWidget
    GarageWidget()                      # lesson 01
"""
from importlib import import_module as _import_module

_WHERE = {
    "GarageWidget": "garage",
    "parking_comparison": "garage",
    "BlockTableWidget": "pages",
    "WasteWidget": "waste",
    "waste_figure": "waste",
    "SharingWidget": "sharing",
    "TimelineWidget": "timeline",
    "timeline_figure": "timeline",
    "KernelMapWidget": "kernel_map",
    "kernel_map_html": "kernel_map",
    "token_reads_html": "kernel_map",
    "UnifiedMapWidget": "unified_map",
    "unified_map_html": "unified_map",
    "tile_programs": "unified_map",
    "ServingWidget": "serving",
    "usage_figure": "serving",
    "bandwidth_figure": "bandwidth",
    "bandwidth_png": "bandwidth",
    "paging_cost_figure": "bandwidth",
    "paging_cost_png": "bandwidth",
    "CapacityWidget": "capacity",
    "LatencyWidget": "latency", "latency_figure": "latency", "latency_table": "latency",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pagedlab.widgets' has no attribute {name!r}")
    value = getattr(_import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
