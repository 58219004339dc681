"""torchmetrics Metrics that stay exact under DDP: perplexity and topic coherence."""

from gengs_lightning.metrics.coherence import TopicCoherence, npmi_from_counts
from gengs_lightning.metrics.perplexity import Perplexity

__all__ = ["Perplexity", "TopicCoherence", "npmi_from_counts"]
