from .egeunet_blocks import BilinearResize, ChannelFirstLayerNorm, GroupAggregationBridge, GroupedMultiAxisHadamardAttention

__all__ = ["BilinearResize", "ChannelFirstLayerNorm", "GroupAggregationBridge", "GroupedMultiAxisHadamardAttention"]
