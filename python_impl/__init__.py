"""Pure-Python implementations: lists, loops and `math`, nothing else.

Every module here is written to be read next to its CUDA (`cuda_impl/`) and Mojo
(`mojo_impl/`) twins. Each exposes its variants as plain functions and lists them
in `VARIANTS` (name -> function), naive first.
"""
