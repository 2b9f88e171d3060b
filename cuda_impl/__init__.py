"""CUDA C kernels, one .cu file per primitive stem with all its variants (naive first).
Each kernel's launch geometry is the `// launch:` line beside it, and its parameters are
matched to the primitive's declaration by name (harness/backends/cuda/kernels.py). The
.cu files are header-free and compiled at run time by NVRTC (harness/backends/cuda/nvrtc.py);
read them as the lesson, in the order of the header comment at the top of each file."""
