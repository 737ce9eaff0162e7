"""`tradeoff_optuna`: Optuna studies (≥ 4, ask-and-tell) as a Hydra sweeper.

Select it with `hydra/sweeper=tradeoff_optuna`; see docs/optuna.md. The package and the option
name differ from the official `hydra-optuna-sweeper` (`hydra_optuna_sweeper`, `optuna`), so both
can be installed side by side.
"""

__version__ = "0.1.0"
