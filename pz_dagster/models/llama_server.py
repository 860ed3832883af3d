"""llama-cpp-python's OpenAI-compatible server, loading its models without llama.cpp's extra
weight buffers (see ``local_llama.load_without_extra_buffers``: its AMX kernels crash on some
CPUs). The same arguments as ``python -m llama_cpp.server``:

    python -m pz_dagster.models.llama_server --model model.gguf --port 8000
"""

from __future__ import annotations

from pz_dagster.models.local_llama import disable_extra_buffers


def main() -> None:
    disable_extra_buffers()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
