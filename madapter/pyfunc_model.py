"""The registered pyfunc's code: MLflow logs this FILE as the model ("models from code") and runs it
when a version is loaded, instead of unpickling an object (:mod:`madapter.registry`).

It only names the model; everything it loads (checkpoint, settings, backbone weights) comes from the
version's artifacts in ``load_context``.  Not imported by madapter itself: running it is MLflow's job.
"""

import mlflow.models

from madapter.registry import VideoClassifierPyfunc

mlflow.models.set_model(VideoClassifierPyfunc())
