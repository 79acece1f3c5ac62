"""`python -m app.llm.entrypoints <role> [FastChat's own arguments]`: one FastChat process, with the fixes applied.

Roles: controller, openai_api_server (stock FastChat, patched by `fastchat_compat`), llamacpp_worker (ours),
model_worker and vllm_worker (stock FastChat, run exactly as `python -m fastchat.serve.<role>` would).
`app.llm.stack` starts these; they can also be run by hand, on other machines, against one controller.
"""

from __future__ import annotations

import runpy
import sys

ROLES = ("controller", "openai_api_server", "llamacpp_worker", "model_worker", "vllm_worker")


def run_controller() -> None:
    import uvicorn
    from fastchat.serve import controller as module

    args, controller = module.create_controller()
    module.controller = controller  # what the module's own __main__ block does
    uvicorn.run(module.app, host=args.host, port=args.port, log_level="warning")


def run_openai_api_server() -> None:
    import uvicorn
    from fastchat.serve import openai_api_server as module

    from app.llm import fastchat_compat

    fastchat_compat.apply()
    args = module.create_openai_api_server()
    uvicorn.run(module.app, host=args.host, port=args.port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ROLES:
        raise SystemExit(f"usage: python -m app.llm.entrypoints {{{','.join(ROLES)}}} [arguments]")
    role, rest = argv[0], argv[1:]
    sys.argv = [role, *rest]
    if role == "controller":
        run_controller()
    elif role == "openai_api_server":
        run_openai_api_server()
    elif role == "llamacpp_worker":
        from app.llm.llamacpp_worker import main as worker_main

        worker_main(rest)
    else:
        runpy.run_module(f"fastchat.serve.{role}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
