"""Taking a trained backbone elsewhere: export formats with their preprocessing, and features
of a user's own images (`selfsup export`, `selfsup embed`)."""

# The formats live here, apart from the code that writes them, so that the command line can
# list them without importing torch.
FORMATS = ("safetensors", "torchscript", "onnx", "torchvision")
# The file `--out` gets: this extension when it has none; a folder gets backbone<extension>.
EXTENSIONS = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx",
              "torchvision": ".pth"}  # fmt: skip
