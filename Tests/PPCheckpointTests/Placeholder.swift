// Tests for PPCheckpoint.
