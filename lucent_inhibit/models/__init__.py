"""Models: building them from a spec (``loading``: ``efficientnet_lite0``, ``inceptionv1``,
``torchvision:NAME``, ``timm:NAME``, ``clip:NAME``, ``package.module:constructor``), the embedded pretrained
EfficientNet-Lite0 (``embedded``), Lucent's InceptionV1 with its pre-ReLU layers (``inception``), CLIP image
towers (``clip``), weights files (``weights``), reading a model's layers (``layers``) and what the library
picks when the user names no feature: layer, attribution layer and unit (``defaults``). Importing this
package imports nothing else (the command line reads ``defaults`` without torch).
"""
