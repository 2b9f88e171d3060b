"""The CUDA backend: NVRTC compiles cuda_impl/*.cu (nvrtc), the driver API runs and times
them (driver), kernels describes each kernel from its source (signature and launch line),
peaks measures the GPU, backend ties them together."""
