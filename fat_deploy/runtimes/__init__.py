"""One package per runtime (converter, quantization, session, checks, versions), each declaring ``RUNTIME``.

Runtime packages depend on :mod:`fat_deploy.contract`, :mod:`fat_deploy.common` and :mod:`fat_deploy.models`
only, never on the pipeline above them nor on one another (ORT Mobile's use of the ONNX package is the one
declared exception). :mod:`fat_deploy.registry` lists them.
"""
