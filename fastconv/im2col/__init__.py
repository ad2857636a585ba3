"""The im2col method: unfold input windows into a matrix, one BLAS GEMM per group, fold gradients back."""
