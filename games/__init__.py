"""TextWorld cooking games: levels, generation, manifests and batched environments."""
