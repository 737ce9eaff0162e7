"""The search space: Hydra override grammar → Optuna distributions, sampled define-by-run.

Each entry of `hydra.sweeper.params` (and each sweep override on the command line) is one
parameter: `interval(a, b)` and `int(interval(a, b))` are uniform, `tag(log, ...)` log-uniform,
`range(...)` a stepped int/float, `choice(...)` categorical, a plain value is fixed.

Conditional spaces: when a parameter is a config *group* (`loss: choice(tau_cce, hkr)`), each of
its options is composed through Hydra's config loader and the keys of its node recorded; a
parameter under that node (`loss.tau`) is then only sampled, or applied, in trials whose option
has the key. So a trial never carries a parameter its loss ignores, and which parameters belong
to which family comes from tradeoff/conf/loss/*.yaml, not from a table here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    OverrideType,
    RangeSweep,
    Transformer,
)
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial

__all__ = ["Param", "SearchSpace", "SweeperConfigError", "describe_distribution"]

_PREFIX = {OverrideType.CHANGE: "", OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}
_MISSING = object()


class SweeperConfigError(CompactHydraException, ValueError):
    """A bad `hydra.sweeper` setting; Hydra prints just this message, without a traceback."""


@dataclass
class Param:
    """One parameter: its config key, override prefix, and distribution or fixed value."""

    name: str  # config key and Optuna parameter name, e.g. "loss.tau"
    prefix: str = ""  # "", "+" or "++", as written
    distribution: BaseDistribution | None = None  # None for a fixed value
    fixed: str | None = None  # the fixed value as an override string
    choice_strings: tuple[str, ...] = ()  # each categorical choice as an override string

    @property
    def is_fixed(self) -> bool:
        return self.distribution is None

    def render(self, value: Any = None) -> str:
        """This parameter as a Hydra override, for a sampled `value` (or its fixed value)."""
        if self.distribution is None:
            text = self.fixed
        elif isinstance(self.distribution, CategoricalDistribution):
            text = self.choice_strings[self.distribution.choices.index(value)]
        elif isinstance(self.distribution, IntDistribution):
            text = str(int(value))
        else:
            text = repr(float(value))
        return f"{self.prefix}{self.name}={text}"

    def suggest(self, trial: Trial) -> Any:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, d.choices)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, FloatDistribution)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)


def _as_param(override: Override) -> Param:
    """An override (`loss.tau=tag(log, interval(0.1, 1000))`) → a `Param`."""
    name = override.key_or_group + (f"@{override.package}" if override.package else "")
    if override.type not in _PREFIX:
        raise SweeperConfigError(
            f"hydra.sweeper.params: {override.input_line!r} deletes a key; the search space "
            "takes only values and sweeps"
        )
    prefix = _PREFIX[override.type]
    if not override.is_sweep_override():
        return Param(name, prefix, fixed=override.get_value_element_as_str())
    value = override.value()
    try:
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            return _categorical(name, prefix, override)
        if isinstance(value, RangeSweep):
            items = list(override.sweep_iterator(transformer=Transformer.identity))
            if not items:
                raise SweeperConfigError(f"{override.input_line!r} is an empty range")
            low, high = min(items), max(items)
            step = abs(value.step)
            if all(isinstance(x, int) for x in items) and isinstance(value.step, int):
                return Param(name, prefix, IntDistribution(int(low), int(high), step=int(step)))
            return Param(name, prefix, FloatDistribution(float(low), float(high), step=step))
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return Param(name, prefix, IntDistribution(value.start, value.end, log=log))
            return Param(
                name, prefix, FloatDistribution(float(value.start), float(value.end), log=log)
            )
    except ValueError as exc:  # Optuna's checks: low > high, log with low <= 0, ...
        if isinstance(exc, SweeperConfigError):
            raise
        raise SweeperConfigError(
            f"hydra.sweeper.params: {override.input_line!r} is not a valid distribution: {exc}"
        ) from None
    raise SweeperConfigError(
        f"hydra.sweeper.params: {override.input_line!r}: {type(value).__name__} is not "
        "supported; use interval(), tag(log, interval()), int(interval()), range() or choice()"
    )


def _categorical(name: str, prefix: str, override: Override) -> Param:
    values = list(override.sweep_iterator(transformer=Transformer.identity))
    if getattr(override.value(), "shuffle", False):
        # Optuna needs the same choices in the same order in every process and every resume.
        values.sort(key=lambda v: (type(v).__name__, repr(v)))
    strings = tuple(Override._get_value_element_as_str(v) for v in values)
    # Optuna's choices must be None, bool, int, float or str: lists and dicts go as text.
    choices = [
        v if isinstance(v, (str, int, float, bool)) else text
        for v, text in zip(values, strings, strict=True)
    ]
    if len(set(map(repr, choices))) != len(choices):
        raise SweeperConfigError(f"hydra.sweeper.params: {override.input_line!r} repeats a choice")
    return Param(name, prefix, CategoricalDistribution(choices), choice_strings=strings)


def _keys(node: Any, prefix: str = "") -> set[str]:
    """Every key path inside a config node: {"tau", "family", "block", "block.width", ...}."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            out |= _keys(value, path)
    return out


@dataclass
class _Group:
    """A parameter that selects a config group option, and the keys each option's node has."""

    param: Param
    node: str  # config path of the group's node, e.g. "loss"
    keys: dict[str, set[str]] = field(default_factory=dict)  # option → keys under the node


@dataclass
class SearchSpace:
    """Ordered parameters (group selectors first) and which of them depend on a group."""

    params: list[Param]
    groups: dict[str, _Group] = field(default_factory=dict)  # group parameter name → group
    depends: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (group, subkey)

    @classmethod
    def parse(
        cls,
        overrides: Sequence[str],
        *,
        compose: Callable[[list[str]], DictConfig] | None = None,
        group_options: Callable[[str], Iterable[str]] | None = None,
        base: DictConfig | None = None,
    ) -> SearchSpace:
        """Build the space from override strings (later ones win for the same key).

        `compose(overrides)` returns the job config for those overrides and `group_options(g)`
        the options of config group `g` (both from Hydra's config loader); without them no
        parameter is conditional. `base` (the sweep's config) is used to reject unknown keys.
        """
        parser = OverridesParser.create()
        by_name: dict[str, Param] = {}
        for override in parser.parse_overrides(list(overrides)):
            param = _as_param(override)
            by_name.pop(param.name, None)
            by_name[param.name] = param
        space = cls(list(by_name.values()))
        if compose is not None and group_options is not None:
            space._find_groups(compose, group_options)
        space._link_dependents(base)
        # Group selectors first: a trial samples its loss family before the family's params.
        space.params.sort(key=lambda p: p.name not in space.groups)
        return space

    def _find_groups(
        self,
        compose: Callable[[list[str]], DictConfig],
        group_options: Callable[[str], Iterable[str]],
    ) -> None:
        # Parameters selecting config group options: check the options exist, and keep those
        # that other parameters sit under as candidates for conditioning.
        candidates: list[tuple[Param, list[str], str]] = []
        for param in self.params:
            if "@" in param.name:
                continue
            node = param.name.replace("/", ".")
            values = (
                [param.fixed]
                if param.is_fixed
                else list(param.distribution.choices)
                if isinstance(param.distribution, CategoricalDistribution)
                else None
            )
            if not values or not all(isinstance(v, str) for v in values):
                continue
            try:
                options = set(group_options(param.name))
            except Exception:  # not a group (or not resolvable): a plain key
                continue
            if not options:
                continue
            unknown = [v for v in values if v not in options]
            if unknown:
                raise SweeperConfigError(
                    f"hydra.sweeper.params: {param.name} option(s) {', '.join(unknown)} do not "
                    f"exist; {param.name} options: {', '.join(sorted(options))}"
                )
            if any(p.name.startswith(node + ".") for p in self.params):
                candidates.append((param, values, node))  # other parameters sit under it
        nodes = [node for _, _, node in candidates]
        for param, values, node in candidates:
            # Compose each option with the other fixed overrides (a sweep file, data=..., ...),
            # leaving out the keys under candidate groups: they may not exist in every option.
            others = [
                p.render()
                for p in self.params
                if p.is_fixed
                and p.name != param.name
                and not any(p.name.startswith(n + ".") for n in nodes)
            ]
            group = _Group(param, node)
            for value in values:
                cfg = compose([*others, f"{param.prefix}{param.name}={value}"])
                sub = OmegaConf.select(cfg, node, default=None)
                if not isinstance(sub, DictConfig):
                    break  # a _global_ package (e.g. +setting=...): nothing to condition on
                group.keys[value] = _keys(OmegaConf.to_container(sub, resolve=False))
            else:
                self.groups[param.name] = group

    def _link_dependents(self, base: DictConfig | None) -> None:
        for param in self.params:
            if param.name in self.groups:
                continue
            group = next(
                (g for g in self.groups.values() if param.name.startswith(g.node + ".")), None
            )
            if group is not None:
                sub = param.name[len(group.node) + 1 :]
                known = set().union(*group.keys.values())
                if sub not in known and not param.prefix:
                    options = ", ".join(group.keys)
                    raise SweeperConfigError(
                        f"hydra.sweeper.params: {param.name} is not a key of any "
                        f"{group.param.name} option ({options}); keys: "
                        f"{', '.join(sorted(known))}. Use ++{param.name} to add it anyway."
                    )
                self.depends[param.name] = (group.param.name, sub)
            elif base is not None and not param.prefix and "@" not in param.name:
                self._check_key(param.name, base)

    @staticmethod
    def _check_key(name: str, base: DictConfig) -> None:
        if OmegaConf.select(base, name, default=_MISSING, throw_on_missing=False) is not _MISSING:
            return
        if "/" in name:
            return  # a nested config group selection, checked by Hydra when composing
        plain = OmegaConf.to_container(base, resolve=False)
        plain.pop("hydra", None)
        close = difflib.get_close_matches(name, sorted(_keys(plain)), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise SweeperConfigError(
            f"hydra.sweeper.params: {name!r} is not a key of the config.{hint} "
            f"Use +{name} to add a new key."
        )

    @property
    def sampled(self) -> list[Param]:
        return [p for p in self.params if not p.is_fixed]

    def applies(self, param: Param, chosen: dict[str, Any]) -> bool:
        """Whether `param` belongs in a trial whose group parameters took the values `chosen`."""
        if param.name not in self.depends or param.prefix:
            return True
        group, sub = self.depends[param.name]
        return sub in self.groups[group].keys[chosen[group]]

    def suggest(self, trial: Trial) -> list[str]:
        """Sample (or, for a re-queued trial, read back) the trial's parameters → overrides."""
        overrides: list[str] = []
        chosen: dict[str, Any] = {}
        for param in self.params:
            if not self.applies(param, chosen):
                continue
            value = None if param.is_fixed else param.suggest(trial)
            if param.name in self.groups:
                chosen[param.name] = param.fixed if param.is_fixed else value
            overrides.append(param.render(value))
        return overrides

    def describe(self) -> str:
        """The sampled parameters, one a line (with their condition), then the fixed ones."""
        lines = []
        for p in self.sampled:
            cond = ""
            if p.name in self.depends:
                group, sub = self.depends[p.name]
                having = [o for o, keys in self.groups[group].keys.items() if sub in keys]
                cond = f"  (only when {group} is {' or '.join(having)})"
            lines.append(f"  {p.prefix}{p.name}: {describe_distribution(p.distribution)}{cond}")
        fixed = [p.render() for p in self.params if p.is_fixed]
        if fixed:
            lines.append(f"  fixed: {' '.join(fixed)}")
        return "\n".join(lines)


def describe_distribution(d: BaseDistribution | None) -> str:
    """`choice(a, b)`, `float [0.1, 1000] log`, ...: a distribution as the space lists it."""
    if isinstance(d, CategoricalDistribution):
        return f"choice({', '.join(map(str, d.choices))})"
    if isinstance(d, (IntDistribution, FloatDistribution)):
        kind = "int" if isinstance(d, IntDistribution) else "float"
        extra = " log" if d.log else (f" step {d.step}" if d.step not in (None, 1) else "")
        return f"{kind} [{d.low}, {d.high}]{extra}"
    return repr(d)
