"""CUDA C kernels, one .cu file per primitive with all its variants (naive first), and the
launch glue (launch.py) that says how each variant is launched. The .cu files are
header-free and compiled at run time by NVRTC (harness/cuda_compile.py); read them as the
lesson, in the order of the header comment at the top of each file."""
