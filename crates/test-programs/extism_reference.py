"""Runs an Extism plug-in on the real Extism runtime (the Python SDK and the
libextism it bundles, in the virtual environment `scripts/setup` makes), so
that Tern's tests can compare the plug-in host with it.

    extism_reference.py PLUGIN.wasm FUNCTION [FUNCTION ...] [options]

Each FUNCTION is called in turn on one plug-in instance. One call writes its
output to stdout as it is; several write each output followed by a newline.
A failing call (an error the plug-in set, a trap, a timeout) prints
`error: MESSAGE` to stderr after the outputs of the calls before it and
exits 1; so does a plug-in that cannot be loaded. With `--log-level`, the
plug-in's log lines at that level and above go to stderr first, each as
`LEVEL: MESSAGE` (`info: hello`).
"""

import argparse
import json
import os
import re
import sys

import extism
from extism_sys import lib as libextism


def key_value(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wasm", help="the plug-in's main module")
    parser.add_argument("functions", nargs="+", metavar="function")
    parser.add_argument("--input", default="", help="the input, as text")
    parser.add_argument("--input-file", help="the input, read from a file")
    parser.add_argument("--config", type=key_value, action="append", default=[],
                        metavar="K=V", help="a config key the plug-in can read")
    parser.add_argument("--allow-host", action="append", default=[], metavar="H",
                        help="a host the plug-in may send HTTP requests to (globs allowed)")
    parser.add_argument("--allow-http-response-headers", action="store_true",
                        help="let the plug-in read HTTP response headers")
    parser.add_argument("--allow-path", type=key_value, action="append", default=[],
                        metavar="HOST=GUEST", help="a host directory the plug-in sees (needs --wasi)")
    parser.add_argument("--wasi", action="store_true", help="link WASI preview 1")
    parser.add_argument("--wasi-output", action="store_true",
                        help="let the plug-in's WASI stdout and stderr through to ours")
    parser.add_argument("--host-fn-hello-world", action="store_true",
                        help="provide extism:host/user hello_world as extism-pdk's "
                        "host_function example expects: {\"count\": N} back with N times 10")
    parser.add_argument("--link-module", type=key_value, action="append", default=[],
                        metavar="NAME=PATH", help="another module, importable as NAME")
    parser.add_argument("--timeout-ms", type=int, help="the manifest's timeout_ms")
    parser.add_argument("--max-pages", type=int, help="the manifest's memory.max_pages")
    parser.add_argument("--max-var-bytes", type=int, help="the manifest's memory.max_var_bytes")
    parser.add_argument("--log-level", choices=["trace", "debug", "info", "warn", "error"],
                        help="write the plug-in's log lines at this level and above to stderr")
    return parser.parse_args()


def manifest(args):
    wasm = [{"path": path, "name": name} for name, path in args.link_module]
    wasm.append({"path": args.wasm, "name": "main"})
    result = {"wasm": wasm}
    if args.config:
        result["config"] = dict(args.config)
    if args.allow_host:
        result["allowed_hosts"] = args.allow_host
    if args.allow_path:
        result["allowed_paths"] = dict(args.allow_path)
    if args.timeout_ms is not None:
        result["timeout_ms"] = args.timeout_ms
    memory = {}
    if args.max_pages is not None:
        memory["max_pages"] = args.max_pages
    if args.max_var_bytes is not None:
        memory["max_var_bytes"] = args.max_var_bytes
    if memory:
        result["memory"] = memory
    return result


def host_functions(args):
    if not args.host_fn_hello_world:
        return []

    @extism.host_fn(name="hello_world", namespace="extism:host/user",
                    signature=([extism.ValType.I64], [extism.ValType.I64]))
    def hello_world(plugin, inputs, outputs):
        output = json.loads(plugin.input_string(inputs[0]))
        output["count"] *= 10
        plugin.return_string(outputs[0], json.dumps(output))

    return [hello_world]


# How libextism's logger formats a plug-in's line: the time, the level, the
# target `extism::pdk`, the message, the plug-in's id.
PDK_LOG_LINE = re.compile(r'\S+\s+([A-Z]+) extism::pdk: (.*) plugin="[^"]*"\n?', re.DOTALL)


def main():
    args = parse_args()
    if args.input_file is not None:
        with open(args.input_file, "rb") as f:
            data = f.read()
    else:
        data = args.input.encode()
    if args.wasi_output:
        # libextism reads it when it makes the plug-in's WASI context.
        os.environ["EXTISM_ENABLE_WASI_OUTPUT"] = "1"
    logs = []
    logger = extism.set_log_custom(logs.append, args.log_level) if args.log_level else None
    out = sys.stdout.buffer
    try:
        plugin = extism.Plugin(manifest(args), wasi=args.wasi, functions=host_functions(args))
        if args.allow_http_response_headers:
            libextism.extism_plugin_allow_http_response_headers(plugin.plugin)
        for function in args.functions:
            output = plugin.call(function, data)
            out.write(output)
            if len(args.functions) > 1:
                out.write(b"\n")
            out.flush()
    except extism.Error as e:
        print_logs(logger, logs)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print_logs(logger, logs)


def print_logs(logger, logs):
    if logger is None:
        return
    logger.drain()
    for line in logs:
        if match := PDK_LOG_LINE.fullmatch(line):
            print(f"{match[1].lower()}: {match[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
