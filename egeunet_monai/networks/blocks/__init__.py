from . import fused_ops
from .egeunet_blocks import ChannelFirstLayerNorm, GroupAggregationBridge, GroupedMultiAxisHadamardAttention, GroupNorm

__all__ = ["ChannelFirstLayerNorm", "GroupAggregationBridge", "GroupNorm", "GroupedMultiAxisHadamardAttention", "fused_ops"]
