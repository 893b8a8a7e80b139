"""Runs the trainer with the CPU split into two logical devices, so MirroredStrategy has two replicas."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trainer  # noqa: E402,F401  (tf-keras before TensorFlow)
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from trainer import task  # noqa: E402

task.run()
