// Tests for PPSample.
