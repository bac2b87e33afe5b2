// Tests for PPTensor.
