"""The Mojo backend: build compiles mojo_impl/*.mojo into Python extension modules (cached
outside the repository), args packs the one argument block every kernel entry takes,
backend validates, binds and calls."""
