// Tests for PPTorchFormat.
