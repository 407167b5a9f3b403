"""The generation core: one internal request, one internal event stream, shared by every protocol.

`core.types` holds the data both the core and the protocol adapters use; `core.generation` turns
a request into events (model lease, prompt, context check, constraint, engine, stop strings,
reasoning and tool-call detection, usage and metrics)."""
