"""The Flower ServerApp: strategy, aggregation, cloud model, outputs."""
