"""Training: frame features from a frozen encoder, then k-means units (needs audiotok[train])."""
