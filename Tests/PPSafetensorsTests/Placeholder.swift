// Tests for PPSafetensors.
