"""Shipping a trained model: export with parity checks (``export``), an ONNX Runtime engine (``onnx_engine``)
and the HTTP server of ``headstart serve`` (``server``, ``batching``).

``headstart.deploy.export.export_run(run, "onnx")`` writes ``model.onnx``, a sidecar ``model.onnx.json``
(task, classes, preprocessing, input/output names and shapes, opset, hashes, parity) and
``RUN/export.json``. ``headstart.deploy.onnx_engine.OnnxEngine`` predicts with such a file using
numpy, PIL, onnxruntime and (text) tokenizers only: no torch.
"""
