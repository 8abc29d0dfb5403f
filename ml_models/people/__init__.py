"""People counting from a camera: the converted person detector, its hand-labelled frames and its evaluation."""
