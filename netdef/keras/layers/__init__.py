"""Custom Keras 3 layers that reproduce Caffe operations Keras has no exact equivalent for."""
