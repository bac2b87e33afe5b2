// Tests for PPConvert.
