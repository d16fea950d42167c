"""The Keras 3 side of ``benchmarks/throughput.py``: the same seven CIFAR-10 networks written
in Keras as the TF2 course and the Keras example write them, timed with tf.data input.

Runs in its own environment (``benchmarks/.venv-keras``: tensorflow-cpu and keras), never in
dlzoo's. Each model is timed in each setting Keras offers for speed on a CPU, and the best
is reported: ``plain`` (graph mode), ``xla`` (``jit_compile=True``) and ``mixed_bfloat16``
(Keras's mixed-precision policy, the last layer in float32). Prints one JSON line:
``{model: {"images_per_second", "setting", "parameters", "settings": {...}}, "_versions": ...}``.
The parameter counts are trainable weights, to compare with PyTorch's ``parameters()``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def build(name: str):
    import keras
    from keras import layers

    def conv_bn_relu(x, filters, kernel, strides=1, bias=False, eps=1e-3):
        x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=bias)(x)
        return layers.ReLU()(layers.BatchNormalization(epsilon=eps)(x))

    def dense_head(x, width, rate):
        for _ in range(2):
            x = layers.Dropout(rate)(layers.Dense(width, activation="relu")(x))
        return x

    inputs = keras.Input((32, 32, 3))
    x = inputs
    if name == "cbapd":  # the TF2 course's Baseline
        x = layers.Conv2D(6, 5, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Dropout(0.2)(layers.MaxPooling2D(2, padding="same")(x))
        x = layers.Dropout(0.2)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    elif name == "lenet5":
        for filters in (6, 16):
            x = layers.MaxPooling2D(2)(layers.Conv2D(filters, 5, activation="sigmoid")(x))
        x = layers.Flatten()(x)
        x = layers.Dense(84, activation="sigmoid")(layers.Dense(120, activation="sigmoid")(x))
    elif name == "alexnet8":
        for filters in (96, 256):
            x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5)(layers.Conv2D(filters, 3)(x)))
            x = layers.MaxPooling2D(3, 2)(x)
        for filters in (384, 384, 256):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = dense_head(layers.Flatten()(layers.MaxPooling2D(3, 2)(x)), 2048, 0.5)
    elif name == "vgg16":
        for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
            if item == "M":
                x = layers.Dropout(0.2)(layers.MaxPooling2D(2, padding="same")(x))
            else:
                x = conv_bn_relu(x, item, 3, bias=True, eps=1e-5)
        x = dense_head(layers.GlobalAveragePooling2D()(x), 512, 0.2)
    elif name == "inception10":
        channels = 16
        x = conv_bn_relu(x, channels, 3)
        for _ in range(2):
            for strides in (2, 1):
                branch1 = conv_bn_relu(x, channels, 1, strides)
                branch2 = conv_bn_relu(conv_bn_relu(x, channels, 1, strides), channels, 3)
                branch3 = conv_bn_relu(conv_bn_relu(x, channels, 1, strides), channels, 5)
                pooled = layers.MaxPooling2D(3, 1, padding="same")(x)
                x = layers.Concatenate()(
                    [branch1, branch2, branch3, conv_bn_relu(pooled, channels, 1, strides)]
                )
            channels *= 2
        x = layers.GlobalAveragePooling2D()(x)
    elif name == "resnet18":  # CIFAR stem: 3x3/1 conv, no max-pool
        x = conv_bn_relu(x, 64, 3, eps=1e-5)
        in_channels = 64
        for stage, width in enumerate((64, 128, 256, 512)):
            for block in range(2):
                strides = 2 if stage and not block else 1
                residual = conv_bn_relu(x, width, 3, strides, eps=1e-5)
                residual = layers.Conv2D(width, 3, padding="same", use_bias=False)(residual)
                residual = layers.BatchNormalization(epsilon=1e-5)(residual)
                shortcut = x
                if strides != 1 or in_channels != width:
                    shortcut = layers.Conv2D(width, 1, strides, use_bias=False)(x)
                    shortcut = layers.BatchNormalization(epsilon=1e-5)(shortcut)
                x = layers.ReLU()(layers.Add()([residual, shortcut]))
                in_channels = width
        x = layers.GlobalAveragePooling2D()(x)
    elif name == "keras_cifar10_cnn":  # keras/examples/cifar10_cnn.py
        for filters in (32, 64):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.Conv2D(filters, 3, activation="relu")(x)
            x = layers.Dropout(0.25)(layers.MaxPooling2D(2)(x))
        x = layers.Dropout(0.5)(layers.Dense(512, activation="relu")(layers.Flatten()(x)))
    else:
        raise SystemExit(f"error: no Keras version of {name!r}")
    outputs = layers.Dense(10, dtype="float32")(x)  # logits in float32 under mixed precision too
    return keras.Model(inputs, outputs, name=name)


def time_model(name: str, setting: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> tuple:
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if setting == "mixed_bfloat16" else "float32")
    keras.utils.set_random_seed(0)
    model = build(name)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=setting == "xla",
    )
    mean = x.reshape(-1, 3).mean(0) / 255
    std = x.reshape(-1, 3).std(0) / 255

    def preprocess(images, labels):
        images = tf.image.random_flip_left_right(tf.cast(images, tf.float32) / 255)  # per image
        return (images - mean) / std, labels

    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=0)
        .repeat()
        .batch(args.batch, drop_remainder=True)
        .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(data, epochs=1, steps_per_epoch=args.warmup + args.steps, verbose=0, callbacks=[Clock()])
    rate = args.batch * args.steps / (ends[-1] - ends[args.warmup - 1])
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    keras.backend.clear_session()
    return rate, trainable


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help=".npz with x (N, 32, 32, 3) uint8 and y")
    parser.add_argument("--models", required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--settings", default="plain,xla,mixed_bfloat16")
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    loaded = np.load(args.data)
    x, y = loaded["x"], loaded["y"]
    results: dict[str, object] = {"_versions": f"tensorflow {tf.__version__}, keras {keras.__version__}"}
    for name in args.models.split(","):
        rates, parameters = {}, 0
        for setting in args.settings.split(","):
            rates[setting], parameters = time_model(name, setting, x, y, args)
            print(f"keras {name} {setting}: {rates[setting]:.0f} img/s", file=sys.stderr)
        best = max(rates, key=rates.get)
        results[name] = {
            "images_per_second": rates[best],
            "setting": best,
            "parameters": parameters,
            "settings": rates,
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
