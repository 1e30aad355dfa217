"""Caffe's example nets as a Keras user writes them by hand: the baselines the training
benchmarks compare netdef against. Channels-last, returning logits.

Keras is imported inside the functions: ``bench_train.py`` chooses the backend after
importing this module.
"""

from __future__ import annotations


def lenet():  # -> keras.Model
    """examples/mnist/lenet_train_test.prototxt without its data and loss layers."""
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(20, 5)(inputs)
    x = layers.MaxPooling2D(2, 2)(x)
    x = layers.Conv2D(50, 5)(x)
    x = layers.MaxPooling2D(2, 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(500, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def cifar10_quick():  # -> keras.Model
    """examples/cifar10/cifar10_quick.prototxt without its data and loss layers."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 5, padding="same")(inputs)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(x)
    x = layers.AveragePooling2D(3, 2, padding="same")(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu")(x)
    x = layers.AveragePooling2D(3, 2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64)(x)
    return keras.Model(inputs, layers.Dense(10)(x))
