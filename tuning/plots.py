"""The study's evidence as pictures: Optuna's own optimisation-history and importance plots (matplotlib)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def plot_study(study, out_dir: Path) -> list[Path]:
    """``optimization_history.png``, ``intermediate_values.png`` and, with 2+ complete trials,
    ``param_importances.png``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "optimization_history.png": vis.plot_optimization_history,
        "intermediate_values.png": vis.plot_intermediate_values,
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2 and any(len({t.params.get(k) for t in complete}) > 1 for k in complete[0].params):
        plots["param_importances.png"] = vis.plot_param_importances
    written = []
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of a parameter that never varied
                log.warning("no %s: %s", name, exc)
                continue
        fig = (ax if not hasattr(ax, "__len__") else ax.flat[0]).get_figure()
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written
