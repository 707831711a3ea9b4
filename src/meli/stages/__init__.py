"""The pipeline's stages, one module per dvc.yaml stage, each run as `python -m meli.stages.<name>`.

A stage module imports shared basics (meli.layout, meli.params, ...) and meli.models, never
another stage: stages meet only through the files named in meli.layout. dvc.yaml lists, as
deps of each stage, exactly the modules its command imports (tests/test_dvc_yaml.py checks).
"""
