// Tests for PPTrain.
