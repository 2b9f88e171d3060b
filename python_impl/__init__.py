"""Pure-Python implementations: lists, loops and `math`, nothing else.

Every module here is written to be read next to its CUDA (`cuda_impl/`) and Mojo
(`mojo_impl/`) twins. Each exposes its variants as plain functions named
`<primitive>_<variant>` and lists them in `VARIANTS`, naive first. A function takes the
primitive's input tensors as (nested) lists, in the order its declaration gives them
(harness/primitives/<stem>.py), and its scalars by keyword; it returns the output.
"""
