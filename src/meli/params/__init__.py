"""Every tunable of the pipeline: the schema of params.yaml (`schema`, one typed dataclass per
section) and its loader (`load`, which validates it once and names any wrong key in one line).

The names used across the package are re-exported here: `from meli.params import TrainParams,
load_params`.
"""

from meli.layout import PARAMS_FILE
from meli.params.load import load_params, parse_params, to_dict
from meli.params.schema import (
    SECTIONS,
    BaselineParams,
    DataParams,
    EmbeddingsParams,
    EnsembleParams,
    EvaluateParams,
    FeaturizeParams,
    LinearParams,
    Params,
    PrepareParams,
    SearchParams,
    TextParams,
    TrainParams,
    param,
)

__all__ = ["PARAMS_FILE", "SECTIONS", "BaselineParams", "DataParams", "EmbeddingsParams",
           "EnsembleParams", "EvaluateParams", "FeaturizeParams", "LinearParams", "Params",
           "PrepareParams", "SearchParams", "TextParams", "TrainParams", "load_params", "param",
           "parse_params", "to_dict"]
