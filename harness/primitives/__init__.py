"""The declarations, one module per implementation stem (see harness/core/catalogue.py).

Adding a primitive is one declaration here plus its implementation file in each language
that has it: python_impl/<stem>.py, cuda_impl/<stem>.cu, mojo_impl/<stem>.mojo.
"""
