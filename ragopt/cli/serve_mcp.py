"""``ragopt serve-mcp``: serve tool retrieval over the Model Context Protocol (RAG-MCP)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ragopt.cli import _options as opts
from ragopt.cli._output import stdout_reserved_for_json

LIMITS = ("max_k", "max_query_words", "max_request_bytes")


def default_pipeline() -> str:
    """The pipeline served when neither ``--pipeline`` nor the servers config names one: ``tools_onnx`` (``tools``
    with its encoder on ONNX Runtime, int8 weights: 3.2x the calls a second at 32 clients, nDCG@5 within .002 on
    the shared tool sets; benchmarks/MCP.md) where the ``onnx`` extra is installed, else ``tools`` (torch)."""
    from importlib.util import find_spec

    return "tools_onnx" if find_spec("onnxruntime") and find_spec("onnx") else "tools"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve-mcp",
        help="serve tool retrieval over the Model Context Protocol (RAG-MCP)",
        description="Serve an MCP server whose search_tools(query, k) returns the k tools that best fit a task "
        "(name, description, input schema, score), from a tools JSONL file or from the tools of "
        "upstream MCP servers; with --servers it is also a gateway: call_tool(name, arguments) "
        "validates the arguments and forwards the call.",
        epilog="Streamable HTTP is served at /mcp on 127.0.0.1 unless --host says otherwise; set a bearer token "
        "with --token or $RAGOPT_MCP_TOKEN.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--tools",
        metavar="PATH",
        help="tools JSONL ({name, description, input_schema}) or a dataset folder with tools.jsonl",
    )
    g.add_argument(
        "--servers", metavar="CONFIG.yaml", help="upstream MCP servers (stdio commands or HTTP URLs); enables call_tool"
    )
    opts.add_pipeline(
        p,
        default=None,
        help="retrieval pipeline name or YAML (default: the servers config's, else tools_onnx where the onnx extra "
        "is installed, else tools)",
    )
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000; 0 picks a free one)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' over HTTP (default: $RAGOPT_MCP_TOKEN)")
    p.add_argument("--max-k", type=int, default=50, help="largest k a search may ask for (default: 50)")
    p.add_argument(
        "--max-query-words",
        type=int,
        default=None,
        help="cut longer queries to their first N words (default: what the pipeline's models read)",
    )
    p.add_argument(
        "--max-request-bytes", type=int, default=1 << 20, help="largest HTTP request body accepted (default: 1 MiB)"
    )
    p.add_argument(
        "--text-params",
        choices=("none", "names", "descriptions"),
        help="index tool parameters by name, with their descriptions, or not at all (--tools; default: descriptions)",
    )
    p.add_argument(
        "--split-names",
        action="store_true",
        help="also index the words of identifier-style tool names (get_weather -> get weather)",
    )
    opts.add_index_dir(p)
    p.add_argument("--ready-file", metavar="FILE", help="HTTP: write {url, port, pid} as JSON to FILE once listening")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="server log level, on stderr (default: warning)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ragopt.errors import ConfigError

    for name in LIMITS:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be >= 1")
    if args.transport == "http":  # before the model and the index load (seconds), not after
        from ragopt.mcp.server import check_listen

        check_listen(args.host, args.port)
    # stdio: stdout is the MCP channel, so nothing may reach file descriptor 1 before the SDK claims it
    with stdout_reserved_for_json(args.transport == "stdio"):
        from ragopt.mcp.catalog import TextTemplate
        from ragopt.mcp.service import Limits, ToolService
        from ragopt.mcp.upstream import load_gateway_config

        gateway = load_gateway_config(args.servers) if args.servers else None
        args.pipeline = args.pipeline or (gateway.pipeline if gateway else None) or default_pipeline()
        print(f"ragopt serve-mcp: pipeline {args.pipeline}", file=sys.stderr, flush=True)
        template = gateway.text if gateway else TextTemplate()
        if args.text_params:
            template = dataclasses.replace(template, params=args.text_params)
        if args.split_names:
            template = dataclasses.replace(template, split_name=True)
        limits = Limits(
            max_k=args.max_k,
            default_k=min(5, args.max_k),
            max_query_words=args.max_query_words,
            max_request_bytes=args.max_request_bytes,
        )
        service = ToolService(
            opts.load_pipeline(args),
            tools=args.tools,
            gateway=gateway,
            template=template,
            store=opts.store(args),
            limits=limits,
        )
    from ragopt.mcp.server import serve

    serve(
        service,
        transport=args.transport,
        host=args.host,
        port=args.port,
        token=args.token,
        log_level=args.log_level,
        ready_file=args.ready_file,
    )
