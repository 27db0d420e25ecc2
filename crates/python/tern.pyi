# Types of the `tern` module (src/*.rs); maturin ships this file in the wheel.

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

__version__: str

_Data = Union[bytes, bytearray, str]
_Source = Union[str, os.PathLike, bytes, bytearray]
_HostFunction = Callable[..., Union[bytes, bytearray, str, None]]

class LoadError(Exception):
    """A plugin could not be loaded or swapped in."""

class CallError(Exception):
    """A plugin call failed; `report` says what it cost until it stopped."""

    report: "Report"

class Report:
    """What a call cost and how it ended."""

    @property
    def instructions(self) -> int: ...
    @property
    def peak_memory(self) -> int: ...
    @property
    def wall_time(self) -> float: ...
    @property
    def input_bytes(self) -> int: ...
    @property
    def output_bytes(self) -> int: ...
    @property
    def log_bytes(self) -> int: ...
    @property
    def logs(self) -> List[Tuple[str, str]]: ...
    @property
    def logs_truncated(self) -> bool: ...
    @property
    def stopped_by(self) -> Optional[str]: ...

class Session:
    """One instance of a plugin kept across calls."""

    @property
    def kind(self) -> str: ...
    def call(self, name: str, data: Optional[_Data] = None) -> Tuple[bytes, Report]: ...

class Plugin:
    """A loaded plugin; calls may come from many threads at once."""

    @property
    def functions(self) -> List[str]: ...
    @property
    def kind(self) -> str: ...
    @property
    def version(self) -> int: ...
    def call(self, name: str, data: Optional[_Data] = None) -> Tuple[bytes, Report]: ...
    def session(self) -> Session: ...
    def swap(self, path_or_bytes: _Source) -> None: ...

class PluginHost:
    """The host plugins run in: one per process is enough."""

    def __init__(
        self,
        *,
        max_instances: Optional[int] = None,
        cache_dir: Union[str, os.PathLike, bool, None] = None,
    ) -> None: ...
    def load(
        self,
        path_or_bytes: _Source,
        *,
        fuel: Optional[int] = None,
        timeout: Optional[float] = None,
        max_memory: Optional[int] = None,
        max_output: Optional[int] = None,
        config: Optional[Dict[str, str]] = None,
        allowed_hosts: Optional[Sequence[str]] = None,
        env: Optional[Dict[str, str]] = None,
        dirs: Optional[Dict[Union[str, os.PathLike], str]] = None,
        log_level: Optional[str] = None,
        host_functions: Optional[Dict[str, _HostFunction]] = None,
    ) -> Plugin: ...
