"""nets: a deep-learning stack in plain numpy, one readable layer at a time."""
from nets.layers import (Layer, Linear, Flatten, ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, Embedding)
from nets.conv import Conv2d, MaxPool2d
from nets.recurrent import RNN, LSTM
from nets.losses import (MSE, Huber, TakenActionHuber, QuantileHuber, SoftmaxCrossEntropy, BCEWithLogits, softmax,
                         log_softmax)
from nets.optim import SGD, RMSProp, Adam, clip_grad_norm
from nets.model import Sequential, Parallel, CheckpointError, save, load, build, forward_shared_input

__all__ = [
    "Layer", "Linear", "Flatten", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout", "Embedding",
    "Conv2d", "MaxPool2d", "RNN", "LSTM",
    "MSE", "Huber", "TakenActionHuber", "QuantileHuber", "SoftmaxCrossEntropy", "BCEWithLogits", "softmax",
    "log_softmax",
    "SGD", "RMSProp", "Adam", "clip_grad_norm",
    "Sequential", "Parallel", "CheckpointError", "save", "load", "build", "forward_shared_input",
]
from nets.dueling import DuelingHead
__all__ += ["DuelingHead"]
