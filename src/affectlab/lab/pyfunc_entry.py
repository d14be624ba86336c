"""The code an MLflow model of this project is loaded from (MLflow's "models from code": nothing is unpickled): the
pyfunc every experiment shares, affectlab.lab.export.AffectlabModel."""

import mlflow.models

from affectlab.lab.export import AffectlabModel

mlflow.models.set_model(AffectlabModel())
