"""The live-quality monitor: how each promoted version does on the live stream.

``quality``  the join of labelled feedback with predictions (by article id and model version)
             and rolling micro/macro F1, precision and recall per version, in bounded memory
``drift``    output drift: the predicted label distribution against the training priors (PSI)
``rollback`` when the live figures say the production version is worse than the one before
``service``  the loop that reads the topics, serves ``/metrics`` and acts (``tagstream monitor``)

It sits beside the worker and the trainer and imports neither: it reads what they publish.
"""
