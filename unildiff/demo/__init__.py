"""``unildiff demo``: a local web page (Gradio) that restores an uploaded image with the trained model.

- :mod:`unildiff.demo.service`: what one request does, without Gradio: read the upload as ``unildiff
  restore`` reads a file, run the pipeline, write the full-resolution PNG in the input's mode.
- :mod:`unildiff.demo.examples`: one degraded test crop per task from the prepared data, as examples.
- :mod:`unildiff.demo.app`: the page (Gradio Blocks) and its ``restore`` API endpoint.

Gradio is an optional dependency (``pip install -e ".[demo]"``); only :mod:`unildiff.demo.app` imports it.
"""
