"""A bare Flower app whose devices echo arrays (the floor of a deployed round)."""
