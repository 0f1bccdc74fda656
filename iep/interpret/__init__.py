"""Seeing how a network embeds its data: SPCA views, affinity/MPNN graphs, per-layer t-SNE and cluster metrics."""
