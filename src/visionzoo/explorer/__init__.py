"""The architecture explorer: a local web page over the registry, benchmarks and runs.

`visionzoo explore` serves it (FastAPI + uvicorn, `server.py`); `visionzoo explore --export
DIR` writes the same page as a static site (`export.py`). `data.py` assembles what the page
shows, `diagram.py` draws architecture diagrams from the models themselves, and `insight.py`
looks inside a trained run (predictions, feature maps, Grad-CAM, attention). The explorer
defines no model code.
"""
