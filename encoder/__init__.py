"""OV-Encoder: codec patchification (:mod:`encoder.codec`), the packed ViT (:mod:`encoder.model`)."""
