"""Convolutional networks
======================

Images have structure that a dense layer ignores: nearby pixels belong together, and a cat is a cat
wherever it sits in the frame. A convolution builds both facts into the layer itself. It looks at a
small window at a time (locality) and uses the same weights at every position (weight sharing), so
that shifting the image shifts the response (translation equivariance) and the layer needs a few
hundred parameters where a dense layer would need millions.

This chapter starts from the definition of a two-dimensional convolution, written three ways, and
builds from it the parts of every convolutional network: pooling, transposed convolution for
upsampling, a LeNet that reads handwritten digits, residual blocks that let networks grow deep,
depthwise separable convolutions that make them cheap, ConvNeXt, which modernises the residual
network with what vision transformers taught, a U-Net that labels every pixel, and the
receptive field that says how much of the image one output can see. The last recipe turns to one
dimension: dilated causal convolutions, which see only the past of a sequence and, by spreading
their taps further in every layer, a receptive field that doubles with each layer.

All images are channels last, one example of shape ``(H, W, C)`` per call, and sequences
``(T, C)``; a batch is a :func:`jax.vmap` away.
"""

#: The recipes in reading order.
RECIPES = (
    "conv2d",
    "pooling",
    "transposed_conv",
    "lenet",
    "resnet",
    "depthwise_separable",
    "convnext",
    "unet",
    "receptive_field",
    "dilated_causal",
)
