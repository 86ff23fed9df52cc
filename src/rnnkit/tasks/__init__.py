"""One folder per task: its config, model, data adapter, metrics and API (``configure``,
``train``, ``load``, ``evaluate``/``predict``) side by side.

from rnnkit.tasks import lm
run = lm.train(lm.configure(text="my.txt", trainer={"epochs": 5}))
"""
