"""Wire contracts of the project."""
