"""KerasTuner plug-in for mcuformer-tf (DESIGN.md §1, §3, §6a): search spaces as HyperParameters
(`hyperparameters`), target budgets (`budget`), budget oracles (`budget_oracle`), the evolution
oracle (`evolution`), the subnet tuner (`subnet_tuner`), a tune session (`search`) and
search-space evolution (`space_evolution`)."""
import mcuformer_tf  # noqa: F401  (selects tf_keras before anything imports TensorFlow)
