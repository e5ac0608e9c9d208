"""The Hessian study (docs/design.md §4, §11; issue 13): gates vs LoRA conditioning on MiniLM.

    study.py     one run: HessianConfig (frozen), analyze, run; `python -m analysis.hessian`
    setup.py     task examples, the adapted model and its presets (--adapters), the short training run
    compare.py   the sweep as configs, tables; `python -m analysis.hessian.compare`
    plots.py     figures from results/hessian/*.json (`make figures`)
    toy.py       the analytic toy: closed-form Hessians, and the closed-form expected gate loss
"""
from .setup import PRESETS, build, encode, read_task
from .study import HessianConfig, analyze, config_from_args, main, parser, run, to_argv

__all__ = ["HessianConfig", "analyze", "run", "main", "parser", "config_from_args", "to_argv", "read_task", "encode",
           "build", "PRESETS"]
