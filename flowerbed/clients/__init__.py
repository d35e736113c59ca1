"""Everything that happens on a node: data, models, local training, the ClientApp."""
