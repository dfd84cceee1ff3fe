"""A multi-layer network in NumPy, the textbook's MultiLayerNet: affine layers, sigmoid or ReLU,
optional batch normalisation, softmax with cross-entropy, L2 weight decay, gradients by
backpropagation.

The parameters live in one dict, network.params (W1, b1, gamma1, beta1, ..., WL, bL), which an
optimizer updates in place: opt.update(network.params, grads). The layers read their arrays from
that dict at every forward pass. Everything is computed in the parameters' dtype (float64 by
default, float32 on request) and is deterministic: the initial weights come from the
numpy.random.Generator passed in.
"""
import numpy as np

ACTIVATIONS = ("sigmoid", "relu")
WEIGHT_INITS = ("auto", "he", "xavier")
BATCHNORM_EPSILON = 1e-6  # added to the batch variance before the square root
BATCHNORM_MOMENTUM = 0.9  # weight of the old running mean/variance at each training step


class Affine:
    """x @ W + b, with W = params[weight_key] of shape (inputs, outputs), b = params[bias_key]."""

    def __init__(self, params, weight_key, bias_key):
        self.params, self.weight_key, self.bias_key = params, weight_key, bias_key
        self.input = None

    def forward(self, x, train):
        self.input = x
        return x @ self.params[self.weight_key] + self.params[self.bias_key]

    def backward(self, upstream, grads):
        grads[self.weight_key] = self.input.T @ upstream
        grads[self.bias_key] = upstream.sum(axis=0)
        return upstream @ self.params[self.weight_key].T


class Sigmoid:
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2, which never overflows."""

    def __init__(self):
        self.output = None

    def forward(self, x, train):
        self.output = 0.5 * (1.0 + np.tanh(0.5 * x))
        return self.output

    def backward(self, upstream, grads):
        return upstream * (1.0 - self.output) * self.output


class ReLU:
    """max(x, 0); its gradient at 0 is taken as 0."""

    def __init__(self):
        self.negative = None

    def forward(self, x, train):
        self.negative = x <= 0
        return np.where(self.negative, 0, x).astype(x.dtype, copy=False)

    def backward(self, upstream, grads):
        return np.where(self.negative, 0, upstream).astype(upstream.dtype, copy=False)


class BatchNormalization:
    """Per-feature normalisation: with the mini-batch's mean and variance when training (and
    then updating running averages of both), with the running averages otherwise; then scaled
    by params[gamma_key] and shifted by params[beta_key]."""

    def __init__(self, params, gamma_key, beta_key):
        self.params, self.gamma_key, self.beta_key = params, gamma_key, beta_key
        size, dtype = params[gamma_key].shape, params[gamma_key].dtype
        self.running_mean = np.zeros(size, dtype)
        self.running_variance = np.zeros(size, dtype)
        self.centered = self.std = self.normalized = None

    def forward(self, x, train):
        if train:
            mean = x.mean(axis=0)
            self.centered = x - mean
            variance = (self.centered**2).mean(axis=0)
            self.std = np.sqrt(variance + BATCHNORM_EPSILON)
            self.normalized = self.centered / self.std
            self.running_mean = (BATCHNORM_MOMENTUM * self.running_mean
                                 + (1 - BATCHNORM_MOMENTUM) * mean)
            self.running_variance = (BATCHNORM_MOMENTUM * self.running_variance
                                     + (1 - BATCHNORM_MOMENTUM) * variance)
            normalized = self.normalized
        else:
            normalized = ((x - self.running_mean)
                          / np.sqrt(self.running_variance + BATCHNORM_EPSILON))
        return self.params[self.gamma_key] * normalized + self.params[self.beta_key]

    def backward(self, upstream, grads):
        batch_size = upstream.shape[0]
        grads[self.beta_key] = upstream.sum(axis=0)
        grads[self.gamma_key] = (self.normalized * upstream).sum(axis=0)
        # d loss / d normalized, then back through (x - mean) / std with both mean and std
        # functions of x.
        d_normalized = self.params[self.gamma_key] * upstream
        d_centered = d_normalized / self.std
        d_std = -((d_normalized * self.centered) / (self.std * self.std)).sum(axis=0)
        d_variance = 0.5 * d_std / self.std
        d_centered += (2.0 / batch_size) * self.centered * d_variance
        return d_centered - d_centered.sum(axis=0) / batch_size


class SoftmaxCrossEntropy:
    """Softmax of the scores and the mean cross-entropy against integer labels, computed
    through log-softmax (no log of 0, no overflow)."""

    def __init__(self):
        self.probabilities = self.labels = None

    def forward(self, scores, labels):
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.probabilities = np.exp(log_probabilities)
        self.labels = labels
        return -log_probabilities[np.arange(len(labels)), labels].mean()

    def backward(self):
        upstream = self.probabilities.copy()
        upstream[np.arange(len(self.labels)), self.labels] -= 1
        return upstream / len(self.labels)


def initial_weight_std(weight_init, activation, fan_in):
    """The standard deviation of a layer's initial weights: "he" sqrt(2/fan_in), "xavier"
    sqrt(1/fan_in), "auto" He for ReLU and Xavier for sigmoid, or a positive number used as is
    (the textbook's 0.01)."""
    if weight_init == "auto":
        weight_init = "he" if activation == "relu" else "xavier"
    if weight_init == "he":
        return np.sqrt(2.0 / fan_in)
    if weight_init == "xavier":
        return np.sqrt(1.0 / fan_in)
    if isinstance(weight_init, str) or not weight_init > 0:
        raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)} or a number > 0, "
                         f"got {weight_init!r}")
    return float(weight_init)


class MultiLayerNet:
    """A fully connected classifier: (Affine, [BatchNormalization], activation) per hidden
    layer, then Affine and softmax with cross-entropy.

    input_size: features per sample. hidden_sizes: units per hidden layer, e.g. (40, 20).
    output_size: classes. activation: "sigmoid" (default) or "relu". weight_init: "auto"
    (default: He for ReLU, Xavier for sigmoid), "he", "xavier" or a standard deviation.
    use_batchnorm: batch normalisation after each hidden affine layer (default False).
    weight_decay: L2 coefficient lambda; adds lambda/2 * sum(W**2) over the weight matrices to
    the loss (default 0). dtype: of the parameters and all arithmetic (default float64).
    rng: numpy.random.Generator for the initial weights (default: default_rng(0)).
    Biases and beta start at 0, gamma at 1.
    """

    def __init__(self, input_size, hidden_sizes, output_size, activation="sigmoid",
                 weight_init="auto", use_batchnorm=False, weight_decay=0.0,
                 dtype=np.float64, rng=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        self.dtype = np.dtype(dtype)
        self.weight_decay = float(weight_decay)
        self.params = {}
        self.layers = []
        sizes = [input_size, *hidden_sizes, output_size]
        for number, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            std = initial_weight_std(weight_init, activation, fan_in)
            self.params[f"W{number}"] = (rng.standard_normal((fan_in, fan_out)) * std
                                         ).astype(self.dtype)
            self.params[f"b{number}"] = np.zeros(fan_out, self.dtype)
            self.layers.append(Affine(self.params, f"W{number}", f"b{number}"))
            if number == len(sizes) - 1:
                break
            if use_batchnorm:
                self.params[f"gamma{number}"] = np.ones(fan_out, self.dtype)
                self.params[f"beta{number}"] = np.zeros(fan_out, self.dtype)
                self.layers.append(BatchNormalization(self.params, f"gamma{number}",
                                                      f"beta{number}"))
            self.layers.append(ReLU() if activation == "relu" else Sigmoid())
        self.output_layer = SoftmaxCrossEntropy()
        self.weight_keys = [key for key in self.params if key.startswith("W")]

    def predict(self, x, train=False):
        """The class scores (before softmax) for the samples x, shape (n, output_size).
        train=True uses and updates batch-normalisation statistics of this batch."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def loss(self, x, labels, train=False):
        """Mean cross-entropy of x against the integer labels, plus the weight-decay term, as
        a Python float."""
        return float(self._forward_loss(x, labels, train))

    def _forward_loss(self, x, labels, train):
        loss = self.output_layer.forward(self.predict(x, train), labels)
        if self.weight_decay:
            loss = loss + 0.5 * self.weight_decay * sum(
                np.sum(self.params[key] ** 2) for key in self.weight_keys)
        return loss

    def gradient(self, x, labels):
        """Forward in training mode and backpropagate: returns (loss as a Python float,
        grads), grads a dict with the keys, shapes and dtype of params."""
        loss = self._forward_loss(x, labels, train=True)
        grads = {}
        upstream = self.output_layer.backward()
        for layer in reversed(self.layers):
            upstream = layer.backward(upstream, grads)
        if self.weight_decay:
            for key in self.weight_keys:
                grads[key] += self.weight_decay * self.params[key]
        return float(loss), {key: grads[key] for key in self.params}

    def accuracy(self, x, labels):
        """The fraction of samples whose highest score is their label (inference mode)."""
        return float(np.mean(self.predict(x).argmax(axis=1) == labels))
