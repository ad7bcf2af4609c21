from .overlay_saver import OverlaySaver

__all__ = ["OverlaySaver"]
