"""Compiled kernels. Private: use fastconv.functional, which validates input."""
