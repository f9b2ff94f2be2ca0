"""Protocol buffers of the ``mlecs`` package (generated code under versioned subpackages)."""
