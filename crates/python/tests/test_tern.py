"""The `tern` Python package against real Extism plug-ins.

The plug-ins are the ones the Rust tests use, built by crates/test-programs;
`crates/python/run-tests` passes their paths in TERN_TEST_* variables.
"""

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import tern


def wasm(variable):
    path = os.environ.get(variable)
    if not path:
        pytest.fail(f"{variable} is not set; crates/python/run-tests sets it")
    return path


@pytest.fixture(scope="module")
def host():
    return tern.PluginHost(cache_dir=False)


def times_ten(data):
    count = json.loads(data)["count"]
    return json.dumps({"count": count * 10}, separators=(",", ":"))


def test_count_vowels_and_its_report(host):
    plugin = host.load(wasm("TERN_TEST_COUNT_VOWELS"))
    output, report = plugin.call("count_vowels", b"Hello, World!")
    assert output == b'{"count":3}'
    assert isinstance(report, tern.Report)
    assert report.instructions > 0
    assert report.input_bytes == 13
    assert report.output_bytes == 11
    assert report.peak_memory > 0
    assert isinstance(report.wall_time, float)
    assert report.logs == []
    assert report.logs_truncated is False
    assert report.stopped_by is None
    assert repr(report).startswith("Report(instructions=")


def test_input_may_be_str_or_nothing(host):
    plugin = host.load(wasm("TERN_TEST_COUNT_VOWELS"))
    assert plugin.call("count_vowels", "aeiou")[0] == b'{"count":5}'
    assert plugin.call("count_vowels")[0] == b'{"count":0}'
    with pytest.raises(TypeError):
        plugin.call("count_vowels", 42)


def test_plugin_describes_itself(host):
    with open(wasm("TERN_TEST_COUNT_VOWELS"), "rb") as f:
        plugin = host.load(f.read())
    assert plugin.kind == "extism"
    assert "count_vowels" in plugin.functions
    assert plugin.version == 1


def test_config(host):
    path = wasm("TERN_TEST_CONFIG_VARS")
    greeter = host.load(path, config={"greeting": "Howdy"})
    assert greeter.call("greet", "Tern")[0] == b"Howdy, Tern!"
    assert host.load(path).call("greet", "Tern")[0] == b"Hello, Tern!"


def test_vars_outlive_calls(host):
    plugin = host.load(wasm("TERN_TEST_CONFIG_VARS"))
    assert [plugin.call("count")[0] for _ in range(3)] == [b"1", b"2", b"3"]


def test_host_function(host):
    plugin = host.load(
        wasm("TERN_TEST_HOST_FUNCTION"), host_functions={"hello_world": times_ten}
    )
    assert plugin.call("count_vowels", b"aaa")[0] == b'{"count":30}'


def test_host_function_with_its_namespace(host):
    plugin = host.load(
        wasm("TERN_TEST_HOST_FUNCTION"),
        host_functions={"extism:host/user::hello_world": times_ten},
    )
    assert plugin.call("count_vowels", "a")[0] == b'{"count":10}'


def test_host_function_exception_fails_the_call(host):
    def refuse(data):
        raise ValueError("nope")

    plugin = host.load(
        wasm("TERN_TEST_HOST_FUNCTION"), host_functions={"hello_world": refuse}
    )
    with pytest.raises(tern.CallError, match="nope") as failed:
        plugin.call("count_vowels", b"aaa")
    assert isinstance(failed.value.report, tern.Report)
    # The plugin is still usable.
    with pytest.raises(tern.CallError, match="nope"):
        plugin.call("count_vowels", b"aaa")


def test_missing_host_function_is_a_load_error(host):
    with pytest.raises(tern.LoadError, match="hello_world"):
        host.load(wasm("TERN_TEST_HOST_FUNCTION"))


def test_fuel_limit(host):
    plugin = host.load(wasm("TERN_TEST_HOSTILE"), fuel=1_000_000)
    with pytest.raises(tern.CallError, match="fuel") as failed:
        plugin.call("spin")
    report = failed.value.report
    assert report.stopped_by == "fuel"
    assert 0 < report.instructions <= 1_000_000


def test_timeout(host):
    plugin = host.load(wasm("TERN_TEST_HOSTILE"), timeout=0.2)
    with pytest.raises(tern.CallError, match="timed out") as failed:
        plugin.call("spin")
    assert failed.value.report.stopped_by == "timeout"


def test_session_keeps_its_instance(host):
    plugin = host.load(wasm("TERN_TEST_SESSION"))
    session = plugin.session()
    assert session.kind == "extism"
    assert [session.call("incr")[0] for _ in range(3)] == [b"1", b"2", b"3"]
    assert [plugin.call("incr")[0] for _ in range(3)] == [b"1", b"1", b"1"]


def test_calls_from_threads_at_once(host):
    plugin = host.load(wasm("TERN_TEST_COUNT_VOWELS"))
    start = threading.Barrier(4)

    def calls(_):
        start.wait()
        return [plugin.call("count_vowels", b"Hello, World!")[0] for _ in range(25)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [output for outputs in pool.map(calls, range(4)) for output in outputs]
    assert results == [b'{"count":3}'] * 100


def test_logs(host):
    plugin = host.load(wasm("TERN_TEST_LOG"), log_level="info")
    output, report = plugin.call("log_input", "hi")
    assert output == b"hi"
    assert report.logs == [("info", "hi"), ("warn", "hi"), ("error", "hi")]
    assert report.log_bytes == 6


def test_swap(host):
    plugin = host.load(wasm("TERN_TEST_SESSION"))
    with open(wasm("TERN_TEST_CONFIG_VARS"), "rb") as f:
        plugin.swap(f.read())
    assert plugin.version == 2
    assert "greet" in plugin.functions
    assert plugin.call("greet", "Tern")[0] == b"Hello, Tern!"
    with pytest.raises(tern.LoadError):
        plugin.swap(b"not wasm")
    assert plugin.version == 2
    assert plugin.call("greet", "Tern")[0] == b"Hello, Tern!"


def test_load_errors(host, tmp_path):
    assert issubclass(tern.LoadError, Exception)
    assert issubclass(tern.CallError, Exception)
    with pytest.raises(tern.LoadError):
        host.load(b"not wasm")
    with pytest.raises(tern.LoadError):
        host.load(tmp_path / "missing.wasm")


def test_settings_are_checked(host):
    path = wasm("TERN_TEST_COUNT_VOWELS")
    with pytest.raises(ValueError, match="log_level"):
        host.load(path, log_level="loud")
    with pytest.raises(ValueError, match="timeout"):
        host.load(path, timeout=-1.0)
    with pytest.raises(TypeError, match="not callable"):
        host.load(path, host_functions={"hello_world": 42})


def test_cache_dir(tmp_path):
    host = tern.PluginHost(cache_dir=tmp_path / "cache", max_instances=8)
    for _ in range(2):
        plugin = host.load(wasm("TERN_TEST_COUNT_VOWELS"))
        assert plugin.call("count_vowels", b"Hello")[0] == b'{"count":2}'
    assert any((tmp_path / "cache").iterdir())
