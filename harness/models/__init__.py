"""Networks written once against the op layer (harness/backends/ops.py), and their data."""
