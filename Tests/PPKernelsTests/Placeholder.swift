// Tests for PPKernels.
