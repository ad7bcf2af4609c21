from . import fused_ops
from .egeunet_blocks import ChannelFirstLayerNorm, GroupAggregationBridge, GroupedMultiAxisHadamardAttention

__all__ = ["ChannelFirstLayerNorm", "GroupAggregationBridge", "GroupedMultiAxisHadamardAttention", "fused_ops"]
