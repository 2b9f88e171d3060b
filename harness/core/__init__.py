"""The core: the contract (declaration, catalogue, distributions, verify), the runner and
what it measures with (timing, peaks), the results file, and calibrate."""
