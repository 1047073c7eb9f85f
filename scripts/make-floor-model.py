#!/usr/bin/env python3
"""Writes a trivial ONNX model with EfficientNet-Lite0's input and output (FP32 1x3x224x224 in,
1x1000 out): a global average pool and a 3x1000 matrix product, well under a millisecond.

`cloak bench --model` on it measures what the confidentiality tax is made of when inference
costs nothing: the transport floor of each path for a 600 KB request.

    .venv/bin/python scripts/make-floor-model.py .cache/models/floor.onnx
    cargo run --release -p cloak-cli -- bench --model .cache/models/floor.onnx --iterations 300
    cargo run --release -p cloak-cli -- bench --model .cache/models/floor.onnx --iterations 300 --idle-ms 50
"""

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT.onnx", help="where to write the model")
    args = parser.parse_args()
    weights = numpy_helper.from_array(
        np.random.default_rng(7).random((3, 1000), dtype=np.float32), "weights"
    )
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["Softmax:0"]),
        ],
        "transport-floor",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("Softmax:0", TensorProto.FLOAT, [1, 1000])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.out)


if __name__ == "__main__":
    main()
