"""Layer 4, images: pre-trained backbones and their weights, an ImageNet network's top
predictions, the layer-copying experiment. Imports only from the layers below and methods."""
