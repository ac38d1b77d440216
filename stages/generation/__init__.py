"""What `generate.py` runs: loading a model and sampling text, optionally after the trained scheduler
adapted a copy of it.

    sampling.py  loading the model, sampling and printing text
    adapt.py     `--agent`: the trained scheduler adapts a copy of the model
"""
