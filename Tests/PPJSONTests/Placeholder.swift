// Tests for PPJSON.
