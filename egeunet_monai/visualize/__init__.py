from .overlay import GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, draw_overlay, mask_outline, overlay_sheet

__all__ = ["GROUND_TRUTH_COLOUR", "PREDICTION_COLOUR", "draw_overlay", "mask_outline", "overlay_sheet"]
