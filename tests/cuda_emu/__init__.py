"""CPU emulator for CUDA C kernels, for tests on machines without a GPU (see README.md)."""
from .emu import (CompileError, EmulatorError, LaunchConfigError, compile_kernel, kernel_names,
                  last_launch_stats, run_kernel)

__all__ = ["run_kernel", "compile_kernel", "kernel_names", "EmulatorError", "CompileError",
           "LaunchConfigError", "last_launch_stats"]
