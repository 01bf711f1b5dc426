"""Export: encoder + centroids as one self-describing ONNX bundle (needs audiotok[train])."""
