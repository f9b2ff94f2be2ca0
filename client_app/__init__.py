"""The Flower ClientApp: an edge device's round."""
