"""OV-Encoder pretraining as a task of the trainer: teacher features, the concept bank, the data and
the loss."""
