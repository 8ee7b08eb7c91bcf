"""TSN-ResNet backbones with spatio-temporal transforms."""
