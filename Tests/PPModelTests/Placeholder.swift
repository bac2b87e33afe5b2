// Tests for PPModel.
