"""Training: one engine for every neural stage (stage-1 CNNs, contrastive pre-training, neural heads)."""
