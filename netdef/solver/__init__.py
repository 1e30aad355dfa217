"""Training with Caffe's solvers on Keras.

``schedules``: Caffe's lr policies as Keras learning-rate schedules. ``optimizers``: Caffe's
solver types (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) as Keras optimizers with
Caffe's update pipeline (clipping, iter_size, lr_mult/decay_mult, shared params).
``net_model``: the trainable Keras model of a Caffe TRAIN net, whose loss is Caffe's
objective. The solver loop (``trainer``, ``snapshot``, the command-line verbs) builds on
them. This package itself imports nothing, so that ``import netdef`` stays cheap.
"""
