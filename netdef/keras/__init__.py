"""Keras side of netdef: compiling the Caffe-speaking graph IR into Keras 3 models."""
