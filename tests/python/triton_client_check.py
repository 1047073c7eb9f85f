"""Drives a running `cloak serve` with the unmodified `tritonclient` HTTP client (PyPI), the way
ML users do, and prints what it got as one JSON object for the Rust test to check.

Usage: triton_client_check.py HOST:PORT|http://HOST:PORT MODEL INPUT_NAME ROWS COLS
With HOST:PORT it talks TLS to `cloak serve` directly: the server's certificate is an attested
RA-TLS certificate that stock TLS clients cannot appraise, and this check is about protocol
compatibility, so it connects without certificate verification. With http://HOST:PORT it talks
to `cloak proxy`, which appraises the server and checks receipts: the way to deploy it.
"""
import json
import ssl
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, model, input_name, rows, cols = sys.argv[1:6]
    shape = [int(rows), int(cols)]
    def unverified_context(cafile=None):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    if url.startswith("http://"):
        client = httpclient.InferenceServerClient(url=url[len("http://"):])
    else:
        client = httpclient.InferenceServerClient(
            url=url, ssl=True, insecure=True, ssl_context_factory=unverified_context)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(model),
    }
    data = (np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) - 3.0) / 4.0
    results = {}
    for mode, binary in (("binary", True), ("json", False)):
        tensor = httpclient.InferInput(input_name, shape, "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        metadata = report["model_metadata"]
        outputs = [
            httpclient.InferRequestedOutput(o["name"], binary_data=binary)
            for o in metadata["outputs"]
        ]
        result = client.infer(model, [tensor], outputs=outputs, request_id=f"req-{mode}")
        response = result.get_response()
        results[mode] = {
            "id": response.get("id"),
            "outputs": {
                o["name"]: result.as_numpy(o["name"]).tolist() for o in metadata["outputs"]
            },
        }
    report["results"] = results
    report["input"] = data.tolist()
    try:
        client.infer("no-such-model", [tensor])
        report["unknown_model_error"] = None
    except InferenceServerException as error:
        report["unknown_model_error"] = {"status": error.status(), "message": error.message()}
    bad = httpclient.InferInput(input_name, [shape[0], shape[1] + 1], "FP32")
    bad.set_data_from_numpy(np.zeros([shape[0], shape[1] + 1], dtype=np.float32))
    try:
        client.infer(model, [bad])
        report["wrong_shape_error"] = None
    except InferenceServerException as error:
        report["wrong_shape_error"] = {"status": error.status(), "message": error.message()}
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
