"""Attribution methods: how much each input token pushed the model towards a target."""

from explainers.attribution import ig  # noqa: F401  (registers the method)
